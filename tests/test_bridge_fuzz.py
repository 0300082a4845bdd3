"""Hypothesis against the bridge's HTTP layer: hostile bodies, headers, sizes and framing.

The bridge runs as a real aiohttp server on a socket (in this process, so the
fuzz stays fast and can count parser calls). For every generated delivery the
expected answer is computed independently of the bridge, from the rules in
docs/security.md: oversized 413, not JSON 415, not signed right 401, signed but
malformed 400, signed and well-formed 200. Never a 5xx; nothing unsigned ever
reaches the JSON parser, and nothing the bridge refuses reaches a backend.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundry.bridge import verify
from foundry.bridge.app import Bridge
from foundry.bridge.commands import Claim, Trigger
from foundry.bridge.logs import LOGGER_NAME
from foundry.bridge.mapping import Decision, Intake, Ticket, TriggerRule
from foundry.bridge.settings import Settings
from foundry.dev.server_thread import ServerThread

pytestmark = pytest.mark.slow  # about 20 s of examples

SECRET = "fuzz-linear"
GH_SECRET = "fuzz-github"
LIMIT = 4096  # the bridge's body limit for this module: sizes around it are cheap to send
# Examples per property: the module runs in about 20 s on a quiet 2-core machine.
EXAMPLES = 50
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])


class Backend:
    """Answers like an empty world and records every call, so a test can see what reached it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        with self.lock:
            self.calls.append(name)

    def delivery_recorded(self, provider: str, delivery_id: str) -> bool:
        self._call("delivery_recorded")
        return False

    def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool:
        self._call("record_delivery")
        return True

    def claim(self, ticket: Ticket) -> Claim:
        self._call("claim")
        return Claim("unchanged", None, None)

    def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str:
        self._call("create_or_attach_run")
        return "attached"

    def active_run(self, issue_id: str) -> None:
        self._call("active_run")
        return None

    def active_run_by_key(self, issue_key: str) -> None:
        self._call("active_run_by_key")
        return None

    def run_plan_hash(self, run: Any) -> None:
        self._call("run_plan_hash")

    def create_approval(self, run: Any, decision: Decision, plan_hash: str | None = None) -> bool:
        self._call("create_approval")
        return False

    def hint_run(self, run: Any, value: str) -> bool:
        self._call("hint_run")
        return False

    def check_ready(self) -> dict[str, str]:
        return {"database": "ok", "kubernetes": "ok"}


class _BridgeThread(ServerThread):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge

    def build_app(self) -> web.Application:
        return self.bridge.application()


class _Errors(logging.Handler):
    """The bridge's ERROR lines: "delivery failed unexpectedly" is how a 500 shows, even to a sender that left."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class World:
    def __init__(self, url: str, backend: Backend, parses: list[str], errors: _Errors) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.url = url
        self.backend = backend
        self.parses = parses
        self.errors = errors
        self.answers: list[int] = []

    def reset(self) -> "World":
        """Forget what earlier examples parsed and called (fixtures are set up once per test, not per example)."""
        self.parses.clear()
        with self.backend.lock:
            self.backend.calls.clear()
        return self

    def post(self, endpoint: str, body: bytes | Iterator[bytes], headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        response = self.http.post(f"/webhooks/{endpoint}", content=body, headers=headers)
        self.answers.append(response.status_code)
        assert response.status_code < 500, response.text
        assert self.errors.records == [], self.errors.records
        assert response.json()  # every answer, refusals included, is a JSON body
        return response


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    parses: list[str] = []
    real_loads = json.loads

    def loads(*args: Any, **kwargs: Any) -> Any:
        parses.append("json.loads")
        return real_loads(*args, **kwargs)

    original = verify.json
    verify.json = types.SimpleNamespace(loads=loads, JSONDecodeError=json.JSONDecodeError)  # type: ignore[assignment]
    settings_ = Settings(namespace="ns", linear_secrets=(SECRET,), github_secrets=(GH_SECRET,), tolerance_seconds=60.0,
                         trigger=TriggerRule(), workers=2, database_url=None, kubeconfig=None)
    backend = Backend()
    server = _BridgeThread(Bridge(settings_, backend, max_body_bytes=LIMIT))  # type: ignore[arg-type]
    errors = _Errors()
    logging.getLogger(LOGGER_NAME).addHandler(errors)
    server.start()
    try:
        yield World(server.url, backend, parses, errors)
    finally:
        server.stop()
        verify.json = original  # type: ignore[assignment]
        logging.getLogger(LOGGER_NAME).removeHandler(errors)


def _linear_signature(body: bytes, secret: str = SECRET) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def _github_signature(body: bytes, secret: str = GH_SECRET) -> bytes:
    return b"sha256=" + _linear_signature(body, secret)


# ---------------------------------------------------------------- strategies

# Visible ASCII, space, tab and obs-text (latin-1): what HTTP allows in a header value.
# Control bytes are refused by the HTTP layer itself (test_control_bytes_in_headers_are_400).
_header_value = st.binary(min_size=0, max_size=80).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c <= 126 or c >= 128).strip(b" \t")
)
_header_name = st.sampled_from([b"Linear-Delivery", b"Linear-Event", b"X-GitHub-Event", b"X-GitHub-Delivery",
                                b"User-Agent", b"Accept", b"X-Forwarded-For", b"Linear-Timestamp", b"Cookie"])
_extra_headers = st.dictionaries(_header_name, _header_value, max_size=6).map(lambda d: list(d.items()))
_json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
_json = st.recursive(_json_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c,
                                                                                       max_size=5), max_leaves=30)
_bodies = st.one_of(
    st.binary(max_size=600),
    _json.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 2000).map(lambda n: b"[" * n + b"]" * n),  # nesting
    st.integers(1, 200).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b"", b"{", b"\xff\xfe\x00{", b'{"type": "Issue"', b"\xef\xbb\xbf{}", b"1e999999", b"NaN",
                     b'{"a": 1, "a": 2}', b"\"\\ud800\"", b"{}" * 500]),
)
_json_types = st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON",
                               b"application/json ;charset=latin-1"])
_other_types = st.sampled_from([b"text/plain", b"", b"application/x-www-form-urlencoded", b"application/jsonx",
                                b"multipart/form-data; boundary=x", b"json", b"\xff\xfe"])


def _forged_signature(body: bytes) -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.none(),
        _header_value,
        st.just(_linear_signature(body, "another-secret")),
        st.just(_linear_signature(body)[:-1] + b"0" if not _linear_signature(body).endswith(b"0")
                else _linear_signature(body)[:-1] + b"1"),
        st.just(_linear_signature(body + b" ")),  # the signature of other bytes
    )


# ---------------------------------------------------------------- unsigned and wrongly signed


@FUZZ
@given(data=st.data(), endpoint=st.sampled_from(["linear", "github"]), body=_bodies, extra=_extra_headers,
       content_type=_json_types)
def test_fuzz_anything_not_signed_right_is_401_and_never_parsed(
    world: World, data: st.DataObject, endpoint: str, body: bytes, extra: list[tuple[bytes, bytes]],
    content_type: bytes
) -> None:
    signature = data.draw(_forged_signature(body))
    name = b"Linear-Signature" if endpoint == "linear" else b"X-Hub-Signature-256"
    if endpoint == "github" and signature is not None and data.draw(st.booleans()):
        signature = b"sha256=" + signature
    headers = [(b"Content-Type", content_type), *extra]
    if signature is not None:
        headers.append((name, signature))
    assert world.reset().post(endpoint, body, headers).status_code == 401
    assert world.parses == [] and world.backend.calls == []


# ---------------------------------------------------------------- sizes and media types


@FUZZ
@given(endpoint=st.sampled_from(["linear", "github"]), size=st.integers(LIMIT - 64, LIMIT + 64),
       signed=st.booleans(), chunked=st.booleans(), content_type=_json_types | _other_types)
def test_fuzz_sizes_around_the_limit_and_media_types(
    world: World, endpoint: str, size: int, signed: bool, chunked: bool, content_type: bytes
) -> None:
    body = b'{"pad":"' + b"x" * max(0, size - 10) + b'"}'
    headers = [(b"Content-Type", content_type)]
    if signed:
        headers.append((b"Linear-Signature", _linear_signature(body)) if endpoint == "linear"
                       else (b"X-Hub-Signature-256", _github_signature(body)))
    sent: bytes | Iterator[bytes] = iter([body[i:i + 1000] for i in range(0, len(body), 1000)]) if chunked else body
    status = world.reset().post(endpoint, sent, headers).status_code
    mime = content_type.split(b";", 1)[0].strip().lower()
    if len(body) > LIMIT and not (chunked and mime != b"application/json"):
        # Announced sizes are refused before anything else; a chunked body is
        # refused when it grows past the limit, which is after the media type.
        expected = 413
    elif mime != b"application/json":
        expected = 415
    elif not signed:
        expected = 401
    else:
        expected = 400  # signed, but no delivery id header and no Linear envelope
    assert status == expected, (len(body), chunked, content_type, signed)
    assert world.backend.calls == []
    if not signed:
        assert world.parses == []


# ---------------------------------------------------------------- signed but malformed


def _malformed_linear() -> st.SearchStrategy[bytes]:
    """Linear bodies that a signature cannot save: not JSON, not an object, or without the envelope."""
    fresh = int(time.time() * 1000)
    envelope = st.fixed_dictionaries({"type": st.sampled_from(["Issue", "Comment"]), "action": st.just("create"),
                                      "data": st.just({}), "webhookTimestamp": st.just(fresh)})

    def broken(payload: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        key = st.sampled_from(["type", "action", "data", "webhookTimestamp"])
        # No integers: an integer timestamp is well-formed (and then refused 401 as stale).
        bad = st.none() | st.booleans() | st.floats(allow_nan=False) | st.just("") | st.lists(st.integers(), max_size=2)
        return st.tuples(key, bad, st.booleans()).map(
            lambda kv: {k: v for k, v in {**payload, kv[0]: kv[1]}.items() if not (kv[2] and k == kv[0])})

    return st.one_of(
        st.binary(max_size=300).filter(lambda b: not _is_json_object(b)),
        _json.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
        envelope.flatmap(broken).map(lambda p: json.dumps(p).encode()),
        st.integers(1100, 2000).map(lambda n: b"[" * n + b"]" * n),  # deeper than the parser recurses, under the limit
    )


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


@FUZZ
@given(body=_malformed_linear(), delivery=_header_value.filter(lambda v: v.strip() != b""))
def test_fuzz_signed_but_malformed_linear_bodies_are_400(world: World, body: bytes, delivery: bytes) -> None:
    headers = [(b"Content-Type", b"application/json"), (b"Linear-Delivery", delivery),
               (b"Linear-Signature", _linear_signature(body))]
    response = world.reset().post("linear", body, headers)
    assert response.status_code == 400, (body[:200], response.text)
    assert world.backend.calls == []


# ---------------------------------------------------------------- signed, well-formed, hostile content

_fields = st.sampled_from(["id", "identifier", "title", "updatedAt", "state", "team", "labels", "body", "issueId",
                           "user", "userId", "priority", "description", "url", "issue"])
_hostile = st.recursive(_json, lambda c: st.dictionaries(_fields, c, max_size=4), max_leaves=12)


@FUZZ
@given(kind=st.sampled_from(["Issue", "Comment", "Reaction"]), action=st.sampled_from(["create", "update", "remove"]),
       data=st.dictionaries(_fields, _hostile, max_size=8), actor=_hostile, updated_from=_hostile,
       labels=st.sampled_from([None, ["foundry"], [{"name": "foundry"}], {"nodes": [{"name": "FOUNDRY"}]}]))
def test_fuzz_signed_events_with_hostile_content_are_200_or_400(
    world: World, kind: str, action: str, data: dict[str, Any], actor: Any, updated_from: Any, labels: Any
) -> None:
    if labels is not None:
        data = {**data, "labels": labels}  # so some fuzzed issues carry the trigger and reach the claim
    payload = {"type": kind, "action": action, "data": data, "actor": actor, "updatedFrom": updated_from,
               "webhookTimestamp": int(time.time() * 1000)}
    body = json.dumps(payload).encode()
    headers = [(b"Content-Type", b"application/json"), (b"Linear-Delivery", b"d-" + _linear_signature(body)[:12]),
               (b"Linear-Signature", _linear_signature(body))]
    response = world.reset().post("linear", body, headers)
    if len(body) > LIMIT:
        assert response.status_code == 413, response.text
        return
    assert response.status_code in (200, 400), (response.status_code, response.text)
    if response.status_code == 400:
        assert world.backend.calls == []  # refused before anything was applied


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_header_name | st.sampled_from([b"Linear-Signature", b"X-Hub-Signature-256", b"Content-Type"]),
       value=st.binary(min_size=1, max_size=20).map(lambda b: b"a" + bytes([1 + (b[0] % 8)]) + b[1:]))
def test_control_bytes_in_headers_are_400(world: World, name: bytes, value: bytes) -> None:
    # No client library sends these, so over a raw socket.
    value = bytes(c for c in value if c not in (10, 13))
    status = _raw_status(world, name + b": " + value + b"\r\nContent-Length: 2\r\n\r\n{}")
    assert _code(status) == b"400", status


# ---------------------------------------------------------------- framing a client library would not send


def _code(status_line: bytes) -> bytes:
    """b"400" of b"HTTP/1.0 400 Bad Request" (the HTTP layer answers parse errors as HTTP/1.0)."""
    parts = status_line.split(b" ")
    assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1."), status_line
    return parts[1]


def _raw_status(world: World, rest: bytes) -> bytes:
    """The status line the bridge answers a POST whose headers end with `rest` (bytes as given)."""
    host, port = world.url.removeprefix("http://").rsplit(":", 1)
    request = b"POST /webhooks/linear HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request + rest)
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]

RAW = [
    ("two Content-Length headers", b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    ("negative Content-Length", b"Content-Length: -1\r\n\r\n{}"),
    ("Content-Length over the limit", f"Content-Length: {LIMIT + 1}\r\n\r\n".encode() + b"{}"),
    ("Content-Length and chunked", b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    ("bad chunk size", b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    ("header line of 64 KiB", b"X-Big: " + b"a" * 65536 + b"\r\nContent-Length: 2\r\n\r\n{}"),
    ("header without a colon", b"Garbage\r\nContent-Length: 2\r\n\r\n{}"),
    ("obsolete line folding", b"Linear-Signature: abc\r\n def\r\nContent-Length: 2\r\n\r\n{}"),
]


@pytest.mark.parametrize("case, extra", RAW, ids=[c for c, _ in RAW])
def test_hostile_framing_is_answered_4xx(world: World, case: str, extra: bytes) -> None:
    status = _raw_status(world, extra)
    assert _code(status).startswith(b"4"), (case, status)
    assert world.errors.records == []


@pytest.mark.parametrize("half_close", [True, False], ids=["sender half-closes", "sender hangs up"])
def test_a_body_shorter_than_announced_is_the_senders_mistake(world: World, half_close: bool) -> None:
    world.reset()
    host, port = world.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /webhooks/linear HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{}")
        if half_close:
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(65536)
            assert answer == b"" or _code(answer.split(b"\r\n", 1)[0]) == b"400", answer
    time.sleep(0.3)  # the bridge notices the lost connection and logs its line
    assert world.errors.records == [] and world.backend.calls == [] and world.parses == []
