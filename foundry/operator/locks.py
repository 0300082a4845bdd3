"""One reconcile at a time per run inside this process.

The run handler, the resync daemon, the Job watcher and the approval watcher
can all ask to reconcile the same run at once; they take turns here. (Across
processes, the resourceVersion check on every status write is the guard.)
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class RunLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def hold(self, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)
