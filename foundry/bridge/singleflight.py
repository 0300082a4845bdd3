"""Share one execution among identical commands in flight in this process.

A storm of deliveries for one ticket revision would otherwise make every copy
claim and create in turn, only to attach; with this, concurrent copies in one
replica wait for the first one's result. It is an optimisation only: replicas
do not share it, and correctness rests on the database claim and the API
server's name uniqueness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, True) for the caller that started the execution, (result, False) for those that joined it."""
        task = self._flights.get(key)
        leader = task is None
        if task is None:
            # A task of its own, so a caller that disconnects (is cancelled)
            # does not cancel the work the others are waiting for.
            task = asyncio.ensure_future(start())
            self._flights[key] = task
            task.add_done_callback(lambda t, k=key: self._done(k, t))
        return await asyncio.shield(task), leader

    def _done(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported as lost

    def __len__(self) -> int:
        return len(self._flights)
