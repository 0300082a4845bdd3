"""Retry with jittered exponential backoff, and reading the waits services ask for.

Pure functions plus one loop; the sleep and random source are injected so
tests run the real schedule without waiting it out.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

from foundry.connectors.errors import ConnectorError, Paused, RateLimited

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A rate-limit wait longer than this is not slept in the caller's thread
    # (an operator handler must not block for an hour): RateLimited is raised
    # and the caller reschedules.
    max_rate_limit_wait: float = 120.0


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number `attempt` (1-based): half fixed, half jitter, so
    many clients retrying together spread out but never retry instantly."""
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    return ceiling / 2 + rand() * ceiling / 2


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
    retry_if: Callable[[ConnectorError], bool] = lambda e: e.retryable,
) -> T:
    """Call `fn` until it returns, retrying retryable ConnectorErrors.

    Rate limits wait exactly what the service said (or back off if it said
    nothing); everything else backs off with jitter.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except RateLimited as err:
            wait = err.retry_after if err.retry_after is not None else backoff_delay(attempt, policy, rand)
            if not retry_if(err) or attempt >= policy.max_attempts or wait > policy.max_rate_limit_wait:
                raise
            sleep(max(0.0, wait))
        except Paused:
            raise  # the service is known to be silent right now: the caller retries later, not here
        except ConnectorError as err:
            if not retry_if(err) or attempt >= policy.max_attempts:
                raise
            sleep(backoff_delay(attempt, policy, rand))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def header_epoch_wait(headers: Mapping[str, str], name: str, now: float, *, millis: bool) -> float | None:
    """Seconds until the epoch time in header `name` (GitHub: seconds, Linear: milliseconds)."""
    raw = headers.get(name)
    if not raw:
        return None
    try:
        at = float(raw)
    except ValueError:
        return None
    if millis:
        at /= 1000.0
    return max(0.0, at - now)
