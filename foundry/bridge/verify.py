"""Checks every webhook passes before the bridge acts on it. Pure functions.

The order is fixed by the bridge's contract: size (413) and media type (415),
which need no body; then authenticity of the raw bytes (401), so nothing a
stranger sends is parsed; then the JSON shape (400) and Linear's signed
timestamp (401). Nothing here touches the network, the database or the clock
(the caller passes `now`), so every branch is testable without a server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_TOLERANCE_SECONDS = 60.0
# Delivery ids are echoed into logs and stored in the database; a sender that
# uses longer ids is not one we talk to.
MAX_DELIVERY_ID = 200


class Rejection(Exception):
    """A delivery the bridge refuses: `status` is the HTTP answer, `reason` a short text for the sender."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """A parsed delivery whose shape is known (parsed only after its signature verified)."""

    provider: str  # "linear" | "github"
    event: str  # Linear's `type` (Issue, Comment, ...) or GitHub's X-GitHub-Event
    delivery_id: str
    payload: dict[str, Any]


def check_declared_size(content_length: int | None, limit: int = MAX_BODY_BYTES) -> None:
    """413 before reading anything when the sender announces a body over the limit."""
    if content_length is not None and content_length > limit:
        raise Rejection(413, f"body larger than {limit} bytes")


def check_read_size(size: int, limit: int = MAX_BODY_BYTES) -> None:
    """413 when a body without (or with a lying) Content-Length grew past the limit while read."""
    if size > limit:
        raise Rejection(413, f"body larger than {limit} bytes")


def check_content_type(content_type: str | None) -> None:
    """415 unless the body is declared as JSON (`application/json`, parameters allowed)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != "application/json":
        raise Rejection(415, "content type must be application/json")


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 400."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejection(400, "body is not valid JSON") from None
    except RecursionError:  # deeply nested arrays: still just bad input
        raise Rejection(400, "body is nested too deeply") from None
    if not isinstance(value, dict):
        raise Rejection(400, "body must be a JSON object")
    return value


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _delivery_id(headers: Mapping[str, str], name: str) -> str:
    value = _header(headers, name)
    if value is None:
        raise Rejection(400, f"missing {name} header")
    if len(value) > MAX_DELIVERY_ID or not value.isprintable():
        raise Rejection(400, f"{name} header is not a valid delivery id")
    return value


def parse_linear(body: bytes, headers: Mapping[str, str]) -> Envelope:
    """Shape checks for a Linear delivery: the fields every Linear webhook carries."""
    payload = parse_object(body)
    delivery_id = _delivery_id(headers, "Linear-Delivery")
    for field in ("type", "action"):
        if not isinstance(payload.get(field), str) or not payload[field]:
            raise Rejection(400, f"missing or invalid field {field!r}")
    if not isinstance(payload.get("data"), dict):
        raise Rejection(400, "missing or invalid field 'data'")
    timestamp = payload.get("webhookTimestamp")
    # bool is an int in Python; `true` is not a timestamp.
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise Rejection(400, "missing or invalid field 'webhookTimestamp'")
    return Envelope("linear", payload["type"], delivery_id, payload)


def parse_github(body: bytes, headers: Mapping[str, str]) -> Envelope:
    """Shape checks for a GitHub delivery: event and delivery headers plus a JSON object."""
    payload = parse_object(body)
    event = _header(headers, "X-GitHub-Event")
    if event is None:
        raise Rejection(400, "missing X-GitHub-Event header")
    if len(event) > 100 or not event.isprintable():
        raise Rejection(400, "X-GitHub-Event header is not a valid event name")
    delivery_id = _delivery_id(headers, "X-GitHub-Delivery")
    return Envelope("github", event, delivery_id, payload)


def _hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _matches_any(signature: str, body: bytes, secrets: Sequence[str]) -> bool:
    # Compare against every configured secret (rotation) without returning
    # early, so timing does not reveal which secret position matched.
    signature_bytes = signature.strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        expected = _hex_hmac(secret, body).encode("ascii")
        matched |= hmac.compare_digest(expected, signature_bytes)
    return matched


def verify_linear_signature(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    """401 unless `Linear-Signature` is the hex HMAC-SHA256 of the raw body under one of `secrets`."""
    signature = _header(headers, "Linear-Signature")
    if signature is None or not secrets or not _matches_any(signature, body, secrets):
        raise Rejection(401, "invalid signature")


def verify_linear_timestamp(envelope: Envelope, now: float, tolerance: float) -> None:
    """401 unless `webhookTimestamp` (ms) is within `tolerance` seconds of `now` (s), either way.

    Future timestamps are refused as well: a signed body with a timestamp far
    ahead could otherwise be replayed for as long as it stays "fresh".
    """
    sent = envelope.payload["webhookTimestamp"] / 1000.0
    if abs(now - sent) > tolerance:
        raise Rejection(401, "webhook timestamp outside the accepted window")


def verify_github_signature(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    """401 unless `X-Hub-Signature-256` is `sha256=` + the hex HMAC-SHA256 of the raw body."""
    header = _header(headers, "X-Hub-Signature-256")
    if header is None or not header.startswith("sha256=") or not secrets:
        raise Rejection(401, "invalid signature")
    if not _matches_any(header[len("sha256="):], body, secrets):
        raise Rejection(401, "invalid signature")


def parse_secrets(value: str | None) -> tuple[str, ...]:
    """Comma-separated secrets (several during a rotation); blanks dropped."""
    if not value:
        return ()
    return tuple(s.strip() for s in value.split(",") if s.strip())
