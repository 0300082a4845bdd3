"""One reconcile at a time per run inside this process.

The run handler, the resync daemon, the Job watcher and the approval watcher
can all ask to reconcile the same run at once; they take turns here. (Across
processes, the resourceVersion check on every status write is the guard.)

A run's lock exists only while someone holds or waits for it, so the map
holds at most as many entries as reconciles in flight, however many runs the
operator has ever seen.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0  # holders and waiters


class RunLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], _Entry] = {}

    @contextmanager
    def hold(self, namespace: str, name: str) -> Iterator[None]:
        key = (namespace, name)
        with self._guard:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = _Entry()
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[key]

    def forget(self, namespace: str, name: str) -> None:
        """Kept for callers; an idle run has no entry left to forget."""

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)
