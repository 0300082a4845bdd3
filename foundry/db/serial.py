"""One replica at a time for a side effect outside the database.

Searching Linear for a marked comment and then posting it is safe against
crashes (the search finds what a crashed post left) but not against a second
operator doing the same search in the same second: both find nothing and both
post. A PostgreSQL transaction-scoped advisory lock, keyed by what is about to
happen, makes the second replica wait until the first has posted; its search
then finds the comment. The lock goes with the transaction, so a replica that
dies mid-post frees it at once. SQLite (development) has one process and no
such lock: there it is a no-op.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, text


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (what pg_advisory_xact_lock takes)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def one_at_a_time(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock for `name` while the block runs (waits for another holder)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
        yield
