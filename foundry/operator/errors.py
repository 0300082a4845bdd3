"""Errors the reconcile logic raises; the kopf layer maps them to kopf's own.

The logic never imports kopf (see DESIGN.md), so it signals "try again later"
and "this will never work" with these and `foundry.operator.handlers` turns
them into `kopf.TemporaryError` / `kopf.PermanentError`.
"""

from __future__ import annotations


class RetryLater(Exception):
    """An outside dependency (Linear, GitHub, the database, the API server) failed
    in a way that may heal; the transition in progress must be retried, not dropped."""

    def __init__(self, message: str, *, delay: float = 5.0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay
        #: The wait the service itself asked for (Retry-After, a rate-limit reset):
        #: a retry sooner than this is refused again and spends the caller's budget.
        self.retry_after = retry_after


class CannotReconcile(Exception):
    """The run is malformed in a way no retry can fix (bad spec, bad config).

    The reconcile loop ends the run Blocked with this message (and `reason` as
    the status reason), then re-raises it so kopf stops retrying."""

    def __init__(self, message: str, *, reason: str = "CannotReconcile") -> None:
        super().__init__(message)
        self.reason = reason


def retry_wait(backoff: float, err: RetryLater) -> float:
    """Seconds before retrying after `err` when the local backoff step is `backoff`:
    the longer of the two when the service named a wait, else the backoff step."""
    if err.retry_after is None:
        return backoff
    return max(backoff, err.retry_after)
