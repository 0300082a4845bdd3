"""Reads shared by the steps of one reconcile pass.

A pass can walk several phases (WaitingApproval → Approved → AgentRunning),
and every step after Pending asks for the run's FoundryApprovals (the
reject/stop check, then the tally): listing them once per pass instead of once
per question cut the operator's approval lists from about seven per run to two
(tools/bench_operator.py). Reusing the listing within a pass is safe: an
approval created after it fires the approval watcher, which reconciles the run
again as soon as this pass releases the run's lock.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

_cache: ContextVar[dict[Any, Any] | None] = ContextVar("foundry_pass_cache", default=None)


@contextmanager
def one_pass() -> Iterator[None]:
    """Reads inside share one cache; outside any pass nothing is cached."""
    token = _cache.set({})
    try:
        yield
    finally:
        _cache.reset(token)


def cached(key: Any, read: Callable[[], Any]) -> Any:
    cache = _cache.get()
    if cache is None:
        return read()
    if key not in cache:
        cache[key] = read()
    return cache[key]
