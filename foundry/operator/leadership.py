"""Whether this operator process may act, asked by everything that acts.

Reconciling is gated on leadership: the work queue is drained only while
`leading()` is true, and each side effect (a Job create, a comment post, a
status or database write) calls `fence()` right before it, so a process that
has just lost its Lease stops before doing the next thing rather than after.

`AlwaysLeading` is the one-replica case (`--standalone`, and most tests): no
Lease, always allowed. The Lease-holding implementation lives in
foundry.operator.election.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class NotLeading(RuntimeError):
    """This process does not hold the Lease (any more): do not act."""


class Leadership(Protocol):
    def leading(self) -> bool:
        """True while this process holds the Lease and its renew deadline has not passed."""

    async def wait_leading(self) -> None:
        """Return once `leading()` is true (at once if it already is)."""

    def fence(self) -> None:
        """Raise NotLeading unless `leading()`; called right before each side effect."""


class AlwaysLeading:
    def leading(self) -> bool:
        return True

    async def wait_leading(self) -> None:
        await asyncio.sleep(0)

    def fence(self) -> None:
        return None
