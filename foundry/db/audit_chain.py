"""The audit trail's hash chain, as pure functions (no database).

Each event of a run stores the previous event's hash and its own, so editing,
deleting or reordering any stored event breaks every later link.

Two kinds of link:
- keyed (current): hash = HMAC-SHA256(key, canonical JSON of
  ["foundry-audit-v2", run_id, prev_hash, seq, kind, payload, at]); the event
  stores the key's id. Without the key nobody can write a link that verifies,
  not even someone who can write the database.
- unkeyed (written before a key was configured, or with none):
  hash = sha256(canonical JSON of [prev_hash, seq, kind, payload, at]). Still
  verified, but anyone can recompute it.

A chain alone cannot show that its tail was cut off: the shorter chain is
still a valid chain. So each run also has a keyed head record (the number of
events, the last hash, and a MAC over both); verification compares the events
with it and reports a truncated tail, or events added behind the head's back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

GENESIS_HASH = "0" * 64
KEYED_TAG = "foundry-audit-v2"
HEAD_TAG = "foundry-audit-head-v2"

ENV_KEY = "FOUNDRY_AUDIT_KEY"
# Keys retired by a rotation, comma-separated: still accepted when verifying, never used to write.
ENV_PREVIOUS_KEYS = "FOUNDRY_AUDIT_PREVIOUS_KEYS"
MIN_KEY_LENGTH = 16


class AuditKeyError(ValueError):
    """The configured audit key cannot be used (the message says why)."""


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_payload(payload: Any) -> Any:
    """The payload as it will read back from a JSON column (tuples become lists, etc.).

    Hashing this form, not the caller's object, makes verification reproducible.
    Raises TypeError/ValueError for anything JSON cannot hold.
    """
    return json.loads(canonical_json(payload))


def timestamp_text(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class AuditKey:
    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """A short public name for the key (stored on each event), not the key itself."""
        return hashlib.sha256(b"foundry-audit-key-id:" + self.secret).hexdigest()[:16]

    @classmethod
    def of(cls, text: str, *, source: str = ENV_KEY) -> AuditKey:
        value = text.strip()
        if len(value) < MIN_KEY_LENGTH:
            raise AuditKeyError(f"{source} must be at least {MIN_KEY_LENGTH} characters (got {len(value)}); "
                                "generate one with `openssl rand -hex 32`")
        return cls(value.encode("utf-8"))


@dataclass(frozen=True)
class Keyring:
    """The key new events are written with (None: unkeyed) and every key that may verify."""

    current: AuditKey | None = None
    previous: tuple[AuditKey, ...] = ()

    def find(self, key_id: str) -> AuditKey | None:
        for key in ((self.current,) if self.current else ()) + self.previous:
            if key.key_id == key_id:
                return key
        return None


def keyring_from_env(env: Mapping[str, str] | None = None) -> Keyring:
    env = os.environ if env is None else env
    raw = (env.get(ENV_KEY) or "").strip()
    current = AuditKey.of(raw) if raw else None
    previous = tuple(AuditKey.of(p, source=ENV_PREVIOUS_KEYS)
                     for p in (env.get(ENV_PREVIOUS_KEYS) or "").split(",") if p.strip())
    return Keyring(current, previous)


# ---------------------------------------------------------------- links


def event_hash(prev_hash: str, seq: int, kind: str, payload: Any, at: datetime,
               *, key: AuditKey | None = None, run_id: int | None = None) -> str:
    """The link's hash: HMAC with `key` (binding the run id too), else the unkeyed sha256."""
    if key is None:
        material = canonical_json([prev_hash, seq, kind, payload, timestamp_text(at)])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()
    if run_id is None:
        raise ValueError("a keyed link names its run")
    material = canonical_json([KEYED_TAG, run_id, prev_hash, seq, kind, payload, timestamp_text(at)])
    return hmac.new(key.secret, material.encode("utf-8"), hashlib.sha256).hexdigest()


def head_mac(key: AuditKey, run_id: int, count: int, last_hash: str) -> str:
    material = canonical_json([HEAD_TAG, run_id, count, last_hash])
    return hmac.new(key.secret, material.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ChainLink:
    seq: int
    kind: str
    payload: Any
    at: datetime
    prev_hash: str
    hash: str
    key_id: str | None = None  # None: an unkeyed link


@dataclass(frozen=True)
class ChainHead:
    """What the run's trail looked like after its last append: how many events, the last hash."""

    count: int
    last_hash: str
    key_id: str
    mac: str


@dataclass(frozen=True)
class ChainReport:
    intact: bool
    keyed: bool  # every link is keyed and a keyed head vouches for the length
    events: int
    problems: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.problems:
            return "; ".join(self.problems)
        if not self.keyed:
            return f"{self.events} event(s), unkeyed: alterations show, a cut-off tail would not"
        return f"{self.events} event(s), keyed, head matches"


def check_chain(links: Iterable[ChainLink], head: ChainHead | None, keyring: Keyring,
                run_id: int) -> ChainReport:
    """Verify every link and the head record; each problem is named."""
    problems: list[str] = []
    expected_prev = GENESIS_HASH
    seen_keyed = False
    count = 0
    all_keyed = True
    for position, link in enumerate(links, start=1):
        count = position
        if link.seq != position:
            problems.append(f"event {position} is numbered {link.seq} (an event is missing or moved)")
            break
        if link.prev_hash != expected_prev:
            problems.append(f"event {link.seq} does not follow event {link.seq - 1}")
            break
        if link.key_id is None:
            all_keyed = False
            if seen_keyed:
                problems.append(f"event {link.seq} is unkeyed after keyed events (written without the key)")
                break
            ok = event_hash(link.prev_hash, link.seq, link.kind, link.payload, link.at) == link.hash
        else:
            seen_keyed = True
            key = keyring.find(link.key_id)
            if key is None:
                problems.append(f"event {link.seq} is keyed with {link.key_id}, a key this verifier does not hold")
                break
            ok = hmac.compare_digest(
                event_hash(link.prev_hash, link.seq, link.kind, link.payload, link.at, key=key, run_id=run_id),
                link.hash)
        if not ok:
            problems.append(f"event {link.seq} does not match its hash (altered)")
            break
        expected_prev = link.hash
    if not problems:
        problems.extend(_head_problems(head, keyring, run_id, count, expected_prev, seen_keyed))
    keyed = count > 0 and all_keyed and head is not None
    return ChainReport(not problems, keyed and not problems, count, tuple(problems))


def _head_problems(head: ChainHead | None, keyring: Keyring, run_id: int, count: int, last_hash: str,
                   seen_keyed: bool) -> list[str]:
    if head is None:
        # Keyed events are always written with their head; a trail that has them but
        # no head has lost it, and with it the proof of its length.
        return ["keyed events but no head record (its length cannot be checked)"] if seen_keyed else []
    key = keyring.find(head.key_id)
    if key is None:
        return [f"the head record is keyed with {head.key_id}, a key this verifier does not hold"]
    if not hmac.compare_digest(head_mac(key, run_id, head.count, head.last_hash), head.mac):
        return ["the head record does not match its MAC (altered)"]
    if count < head.count:
        return [f"truncated: the head records {head.count} event(s), {count} remain"]
    if count > head.count:
        return [f"{count - head.count} event(s) after the head record (added without the key)"]
    if head.last_hash != last_hash:
        return ["the last event is not the one the head record names"]
    return []


def chain_is_intact(links: Iterable[ChainLink], keyring: Keyring | None = None, run_id: int = 0) -> bool:
    """True when the links alone verify (no head record checked; see check_chain)."""
    ring = keyring if keyring is not None else keyring_from_env()
    materialised = list(links)
    report = check_chain(materialised, None, ring, run_id)
    # Without a head, "keyed events but no head" is the only head problem; links alone ignore it.
    return all(p.startswith("keyed events but no head") for p in report.problems)
