"""Errors the reconcile logic raises; the kopf layer maps them to kopf's own.

The logic never imports kopf (see DESIGN.md), so it signals "try again later"
and "this will never work" with these and `foundry.operator.handlers` turns
them into `kopf.TemporaryError` / `kopf.PermanentError`.
"""

from __future__ import annotations


class RetryLater(Exception):
    """An outside dependency (Linear, GitHub, the database, the API server) failed
    in a way that may heal; the transition in progress must be retried, not dropped."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class CannotReconcile(Exception):
    """The run is malformed in a way no retry can fix (bad spec, bad config)."""
