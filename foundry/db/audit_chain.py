"""The audit trail's hash chain, as pure functions (no database).

Each event of a run stores the previous event's hash and its own:
    hash = sha256(canonical JSON of [prev_hash, seq, kind, payload, at])
so editing, deleting or reordering any stored event breaks every later link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

GENESIS_HASH = "0" * 64


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


def event_hash(prev_hash: str, seq: int, kind: str, payload: Any, at: datetime) -> str:
    material = canonical_json([prev_hash, seq, kind, payload, timestamp_text(at)])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainLink:
    seq: int
    kind: str
    payload: Any
    at: datetime
    prev_hash: str
    hash: str


def chain_is_intact(links: Iterable[ChainLink]) -> bool:
    """True when seq runs 1, 2, 3… and every link's hashes match its content and predecessor."""
    expected_prev = GENESIS_HASH
    for position, link in enumerate(links, start=1):
        if link.seq != position or link.prev_hash != expected_prev:
            return False
        if event_hash(link.prev_hash, link.seq, link.kind, link.payload, link.at) != link.hash:
            return False
        expected_prev = link.hash
    return True
