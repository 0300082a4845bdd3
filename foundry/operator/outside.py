"""Calls to Linear and GitHub, with their failures sorted into retry-or-not."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from foundry.connectors.errors import ConnectorError, RateLimited
from foundry.operator.errors import RetryLater


@contextmanager
def outside_call(what: str) -> Iterator[None]:
    """A retryable connector failure (5xx, timeout, network, rate limit) becomes
    RetryLater, so the transition is retried with backoff instead of lost."""
    try:
        yield
    except RateLimited as err:
        raise RetryLater(f"{what}: {err}", delay=max(1.0, err.retry_after or 5.0),
                         retry_after=err.retry_after) from err
    except ConnectorError as err:
        if err.retryable:
            raise RetryLater(f"{what}: {err}", delay=5.0) from err
        raise
