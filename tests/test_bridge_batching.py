"""The bridge's write coalescing: batches form while a flush is in flight, each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from foundry.bridge.batching import Batcher


class Flusher:
    def __init__(self, delay: float = 0.02) -> None:
        self.batches: list[list[int]] = []
        self.in_flight = self.peak = 0
        self.delay = delay
        self.fail_on: set[int] = set()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.fail_on & set(items):
                raise ConnectionError("database went away")
            return [item * 10 for item in items]
        finally:
            self.in_flight -= 1


def test_items_arriving_during_a_flush_share_the_next_one() -> None:
    flusher = Flusher()

    async def go() -> list[int]:
        batcher: Batcher[int, int] = Batcher(flusher, max_batch=50, flushers=1)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.005)  # the first flush is now in flight
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 21)]
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(go()) == [i * 10 for i in range(21)]  # each caller its own result
    assert flusher.batches == [[0], list(range(1, 21))]
    assert flusher.peak == 1


def test_batch_size_and_flusher_count_are_bounded() -> None:
    flusher = Flusher()

    async def go() -> None:
        batcher: Batcher[int, int] = Batcher(flusher, max_batch=4, flushers=2)
        await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    asyncio.run(go())
    assert max(len(b) for b in flusher.batches) == 4
    assert sorted(i for b in flusher.batches for i in b) == list(range(20))
    assert flusher.peak == 2


def test_a_failed_flush_fails_its_own_batch_only() -> None:
    flusher = Flusher()
    flusher.fail_on = {1}

    async def go() -> list[object]:
        batcher: Batcher[int, int] = Batcher(flusher, max_batch=3, flushers=1)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True))

    answers = asyncio.run(go())
    assert flusher.batches == [[0, 1, 2], [3, 4, 5]]
    assert all(isinstance(a, ConnectionError) for a in answers[:3])
    assert answers[3:] == [30, 40, 50]


def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    flusher = Flusher(delay=0.05)

    async def go() -> list[int]:
        batcher: Batcher[int, int] = Batcher(flusher, max_batch=10, flushers=1)
        leaving = asyncio.ensure_future(batcher.submit(1))
        staying = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.01)
        leaving.cancel()
        return [await staying]

    assert asyncio.run(go()) == [20]
    assert flusher.batches == [[1, 2]]


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Flusher(), max_batch=0, flushers=1)
