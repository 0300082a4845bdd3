"""Coalesce small writes that arrive together into one statement.

Under load many deliveries finish their command at about the same moment and
each wants one INSERT of its delivery record. While a flush is in flight, the
records that arrive queue up and go together in the next one: one round trip
and one commit for many, with no timer and so no added latency when idle.
Each caller still waits for its own record to be committed before it is
answered, so "recorded only after the command succeeded" holds per delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """`flush(items)` returns one result per item, in order; if it raises, every caller in that batch gets the error.

    A result that is an exception instance is raised to that item's caller only.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]],
        *,
        max_batch: int,
        flushers: int,
    ) -> None:
        if max_batch < 1 or flushers < 1:
            raise ValueError("max_batch and flushers must be at least 1")
        self._flush = flush
        self._max_batch = max_batch
        self._flushers = flushers
        self._running = 0
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._drains: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self._flushers:
            self._running += 1
            drain = asyncio.ensure_future(self._drain())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        # shield: a caller that goes away must not cancel the flush the others wait on.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                try:
                    results = await self._flush([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
                except asyncio.CancelledError:
                    for _, future in batch + self._pending:
                        future.cancel()
                    raise
                except Exception as exc:  # handed to the callers, who answer for it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running -= 1
