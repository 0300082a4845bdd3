"""Webhook verification: size, media type, shape, signatures and timestamps (pure functions)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from foundry.bridge.verify import (
    MAX_BODY_BYTES,
    Rejection,
    check_content_type,
    check_declared_size,
    check_read_size,
    parse_github,
    parse_linear,
    parse_secrets,
    verify_github_signature,
    verify_linear_signature,
    verify_linear_timestamp,
)

NOW = 1_760_000_000.0


def _hex(secret: str, body: bytes) -> str:
    # Independent of the bridge: HMAC-SHA256 written out from the documented scheme.
    block = 64
    key = secret.encode()
    key = key + b"\x00" * (block - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + body).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).hexdigest()


def _linear_body(**overrides: object) -> bytes:
    payload = {"type": "Issue", "action": "update", "data": {"id": "x"}, "webhookTimestamp": int(NOW * 1000)}
    payload.update(overrides)
    return json.dumps(payload).encode()


def _status(fn, *args) -> int | None:
    try:
        fn(*args)
    except Rejection as rejection:
        return rejection.status
    return None


def test_independent_hmac_matches_stdlib() -> None:
    # Guards the test's own reference implementation.
    assert _hex("s3cret", b"abc") == hmac.new(b"s3cret", b"abc", hashlib.sha256).hexdigest()


def test_declared_size_over_limit_is_413_and_at_limit_passes() -> None:
    assert _status(check_declared_size, MAX_BODY_BYTES + 1) == 413
    assert _status(check_declared_size, MAX_BODY_BYTES) is None
    assert _status(check_declared_size, None) is None  # chunked: the read is capped instead
    assert _status(check_read_size, MAX_BODY_BYTES + 1) == 413


@pytest.mark.parametrize(
    "content_type, status",
    [
        ("application/json", None),
        ("application/json; charset=utf-8", None),
        ("Application/JSON", None),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),  # GitHub's other webhook format
        ("", 415),
        (None, 415),
    ],
)
def test_content_type(content_type: str | None, status: int | None) -> None:
    assert _status(check_content_type, content_type) == status


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000, "nested"),
        (_linear_body(type=None), "'type'"),
        (_linear_body(action=""), "'action'"),
        (_linear_body(data=[1]), "'data'"),
        (_linear_body(webhookTimestamp="1700000000000"), "'webhookTimestamp'"),
        (_linear_body(webhookTimestamp=True), "'webhookTimestamp'"),
    ],
)
def test_linear_shape_errors_are_400_with_reason(body: bytes, reason: str) -> None:
    with pytest.raises(Rejection) as caught:
        parse_linear(body, {"Linear-Delivery": "d1"})
    assert caught.value.status == 400
    assert reason in caught.value.reason


def test_linear_requires_delivery_header() -> None:
    with pytest.raises(Rejection) as caught:
        parse_linear(_linear_body(), {})
    assert (caught.value.status, caught.value.reason) == (400, "missing Linear-Delivery header")


def test_linear_signature_accepts_any_configured_secret_and_rejects_others() -> None:
    body = _linear_body()
    new, old = "new-secret", "old-secret"
    verify_linear_signature(body, {"Linear-Signature": _hex(old, body)}, [new, old])  # rotation
    verify_linear_signature(body, {"Linear-Signature": _hex(new, body).upper()}, [new])  # hex is case-free
    for headers in (
        {"Linear-Signature": _hex("other", body)},
        {"Linear-Signature": _hex(new, body + b" ")},
        {"Linear-Signature": "ünïcode"},
        {},
    ):
        assert _status(verify_linear_signature, body, headers, [new, old]) == 401
    assert _status(verify_linear_signature, body, {"Linear-Signature": _hex(new, body)}, []) == 401


@pytest.mark.parametrize(
    "offset_seconds, status", [(0, None), (-59.9, None), (59.9, None), (-61, 401), (61, 401), (-3600, 401)]
)
def test_linear_timestamp_window_both_ways(offset_seconds: float, status: int | None) -> None:
    envelope = parse_linear(_linear_body(webhookTimestamp=int((NOW + offset_seconds) * 1000)), {"Linear-Delivery": "d"})
    assert _status(verify_linear_timestamp, envelope, NOW, 60.0) == status


def test_github_headers_and_signature() -> None:
    body = b'{"zen": "hi"}'
    headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "g-1"}
    envelope = parse_github(body, headers)
    assert (envelope.event, envelope.delivery_id) == ("ping", "g-1")
    for missing in ("X-GitHub-Event", "X-GitHub-Delivery"):
        partial = {k: v for k, v in headers.items() if k != missing}
        with pytest.raises(Rejection) as caught:
            parse_github(body, partial)
        assert caught.value.status == 400 and missing in caught.value.reason
    good = "sha256=" + _hex("gh", body)
    verify_github_signature(body, {"X-Hub-Signature-256": good}, ["gh"])
    for header in ("sha1=" + _hex("gh", body), _hex("gh", body), "sha256=" + _hex("other", body), ""):
        assert _status(verify_github_signature, body, {"X-Hub-Signature-256": header}, ["gh"]) == 401


def test_overlong_delivery_id_is_refused() -> None:
    with pytest.raises(Rejection) as caught:
        parse_linear(_linear_body(), {"Linear-Delivery": "x" * 500})
    assert caught.value.status == 400


def test_parse_secrets() -> None:
    assert parse_secrets(" a, b ,,c ") == ("a", "b", "c")
    assert parse_secrets("") == ()
    assert parse_secrets(None) == ()
