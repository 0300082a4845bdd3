"""Named moments in the operator's work: right after a side effect (a row
inserted, a comment posted, a Job created, a phase written) and before its
result is recorded in the run's status.

In production passing a checkpoint does nothing. A test may install one
handler (`install`) to act at exactly that moment: the kill -9 tests end the
process there, the race tests let another writer land there. The product
holds the seam only; what a test does at a checkpoint lives with the tests.
"""

from __future__ import annotations

from collections.abc import Callable

# The checkpoints there are, so a misspelt name fails loudly instead of never being reached.
POINTS = frozenset({
    "after-db-insert",
    "after-comment-post",
    "after-job-create",
    "after-plan-job-create",
    "after-db-phase",
    # Before each request about the operator's Lease (leader election): where a test
    # cuts the elector off from the API server while everything else still reaches it.
    "before-lease-request",
})

Handler = Callable[[str], None]

_handler: Handler | None = None


def reached(point: str) -> None:
    """The operator passes `point`; the installed handler, if any, runs now in this thread."""
    if point not in POINTS:
        raise ValueError(f"unknown checkpoint {point!r}; known: {sorted(POINTS)}")
    handler = _handler
    if handler is not None:
        handler(point)


def install(handler: Handler | None) -> Handler | None:
    """Make `handler` run at every checkpoint (None: nothing runs); returns the previous one."""
    global _handler
    previous, _handler = _handler, handler
    return previous
