"""The operator's work queue and scheduler, as pure bookkeeping (no I/O, no asyncio, no clock of its own).

One entry per run key (namespace, name), whatever asked for it: a watch
event, an approval, a finished Job, the run's own next due time, a retry.
The rules are the ones controller-runtime's work queue keeps:

- a key is in the queue at most once; asking again only moves its due time
  earlier (never later), so a burst of events costs one reconcile;
- a key is never handed to two workers at once: a key asked for while a
  worker holds it is remembered and handed out again once that worker is done;
- a failed key is held back (`hold`) until its retry time, and asking for it
  sooner does not release it early: a service that said Retry-After is not
  asked again before then;
- the scheduler is the same heap: a run's next wake is a due time, so idle
  runs cost an entry each, not a task or a thread each.

Times are plain floats from the caller's monotonic clock, so tests drive it
with made-up times.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Hashable, Iterator

Key = Hashable


@dataclass
class _Claim:
    """A key that a worker holds; `again` is the earliest time it was asked for meanwhile."""

    again: float | None = None


@dataclass
class WorkQueue:
    _heap: list[tuple[float, int, Key]] = field(default_factory=list)
    _due: dict[Key, float] = field(default_factory=dict)  # the live entry of each waiting key
    _held: dict[Key, float] = field(default_factory=dict)  # not before this time (a retry's wait)
    _failures: dict[Key, int] = field(default_factory=dict)
    _working: dict[Key, _Claim] = field(default_factory=dict)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    # ------------------------------------------------------------ asking

    def add(self, key: Key, at: float) -> None:
        """Have `key` processed at `at` or earlier (if it is already due sooner), but not before its hold."""
        at = max(at, self._held.get(key, at))
        claim = self._working.get(key)
        if claim is not None:
            claim.again = at if claim.again is None else min(claim.again, at)
            return
        current = self._due.get(key)
        if current is not None and current <= at:
            return
        self._push(key, at)

    def forget(self, key: Key) -> None:
        """The run is gone: drop its entry, hold and failure count (a worker holding it finishes on its own)."""
        self._due.pop(key, None)
        self._held.pop(key, None)
        self._failures.pop(key, None)
        claim = self._working.get(key)
        if claim is not None:
            claim.again = None

    # ------------------------------------------------------------ working

    def pop(self, now: float) -> Key | None:
        """The key due earliest, if one is due by `now`; it is the caller's until `done`/`failed`."""
        while self._heap:
            at, _, key = self._heap[0]
            if self._due.get(key) != at:
                heapq.heappop(self._heap)  # superseded by an earlier entry, or forgotten
                continue
            if at > now:
                return None
            heapq.heappop(self._heap)
            del self._due[key]
            self._working[key] = _Claim()
            return key
        return None

    def due_at(self, key: Key) -> float | None:
        """When `key` is next handed out (None: not waiting)."""
        return self._due.get(key)

    def done(self, key: Key, next_at: float | None) -> None:
        """The worker finished `key` without error; `next_at` is its next wake (None: none, e.g. a terminal run)."""
        claim = self._working.pop(key)
        self._held.pop(key, None)
        self._failures.pop(key, None)
        for at in (claim.again, next_at):
            if at is not None:
                self.add(key, at)

    def failed(self, key: Key, retry_at: float) -> int:
        """The worker failed on `key`: hold it until `retry_at`, then hand it out again.
        Returns how many times in a row it has failed (for the caller's backoff)."""
        # What was asked meanwhile waits for the retry too: that is what the hold is for.
        del self._working[key]
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        self._held[key] = retry_at
        self.add(key, retry_at)
        return failures

    def failures(self, key: Key) -> int:
        return self._failures.get(key, 0)

    # ------------------------------------------------------------ looking

    def next_due(self) -> float | None:
        """The earliest due time of a waiting key (None: nothing waits)."""
        while self._heap:
            at, _, key = self._heap[0]
            if self._due.get(key) == at:
                return at
            heapq.heappop(self._heap)
        return None

    def is_working(self, key: Key) -> bool:
        return key in self._working

    def waiting(self) -> int:
        return len(self._due)

    def working(self) -> int:
        return len(self._working)

    def ready(self, now: float) -> int:
        """How many keys are due by `now` (a linear count, for metrics and tests)."""
        return sum(1 for at in self._due.values() if at <= now)

    def _push(self, key: Key, at: float) -> None:
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        # Superseded entries stay in the heap until they surface; compact when
        # they outnumber the live ones, so a key asked for often cannot grow it.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._due):
            self._heap = [(t, s, k) for t, s, k in self._heap if self._due.get(k) == t]
            heapq.heapify(self._heap)


def backoff(failures: int, *, base: float = 1.0, cap: float = 30.0) -> float:
    """The wait after the n-th failure in a row: base, 2·base, 4·base … at most `cap`."""
    return min(cap, base * (2 ** max(0, failures - 1)))
