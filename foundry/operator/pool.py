"""The threads reconciles run on: one bounded pool, sized by `operator.workers`.

Every path that reconciles a run (kopf's create/update/resume handlers, the
resync daemon, the Job and approval watchers, the finalizer) runs its
blocking work here, so the setting bounds them all. Not asyncio's default
executor: that one also serves the event loop's own blocking helpers, and
hung reconciles there would stall kopf itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")

DEFAULT_WORKERS = 16


class ReconcilePool:
    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        if workers < 1:
            raise ValueError(f"operator.workers must be at least 1, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="foundry-reconcile")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on one of the pool's threads, with the caller's context variables (as asyncio.to_thread)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        # Queued reconciles are dropped (the next start resumes every run); running ones finish on their own.
        self._executor.shutdown(wait=False, cancel_futures=True)
