"""Fault hooks shared by the stand-ins: make the next N requests of an operation fail."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

# "error": HTTP 500 · "ratelimit": the service's rate-limit answer (Linear: HTTP 429 with
# code RATELIMITED; GitHub: 403 with x-ratelimit-remaining 0) · "ratelimit_secondary": the
# other form (Linear: HTTP 400 with code RATELIMITED; GitHub: secondary limit with
# retry-after) · "hang": answer only
# after `seconds` (beyond the client's timeout) · "apply_then_error": do the work, then
# answer 500 (a response lost after the write happened, like a crash mid-request).
KINDS = frozenset({"error", "ratelimit", "ratelimit_secondary", "hang", "apply_then_error"})


@dataclass(frozen=True)
class Fault:
    kind: str
    seconds: float = 0.0  # hang duration, or the wait a rate-limit answer announces


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, deque[Fault]] = {}
        self.calls: Counter[str] = Counter()

    def add(self, operation: str, kind: str, count: int = 1, *, seconds: float = 0.0) -> None:
        """Queue `count` faults for `operation` ("*" matches every operation)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(KINDS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queued.setdefault(operation, deque()).extend([Fault(kind, seconds)] * count)

    def take(self, operation: str) -> Fault | None:
        """Count a call to `operation` and pop the fault it should suffer, if any."""
        with self._lock:
            self.calls[operation] += 1
            for key in (operation, "*"):
                queue = self._queued.get(key)
                if queue:
                    return queue.popleft()
        return None

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self.calls.clear()
