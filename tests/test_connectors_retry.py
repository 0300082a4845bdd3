"""The retry loop and the parsing of the waits services announce (pure, no I/O)."""

from __future__ import annotations

import email.utils

import pytest

from foundry.connectors.errors import NotFound, RateLimited, ServerError, Timeout
from foundry.connectors.retry import (
    RetryPolicy, backoff_delay, call_with_retry, header_epoch_wait, parse_retry_after,
)


class Flaky:
    """Raises the given errors in order, then returns "ok"; counts calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_backoff_grows_and_is_capped_with_jitter_inside_bounds() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    assert [backoff_delay(n, policy, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [backoff_delay(n, policy, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_retryable_errors_are_retried_until_success_and_counted() -> None:
    sleeps: list[float] = []
    fn = Flaky(ServerError("op", "t", "boom", status=502), Timeout("op", "t", "slow"))
    assert call_with_retry(fn, RetryPolicy(max_attempts=5, base_delay=1.0), sleep=sleeps.append, rand=lambda: 0.5) == "ok"
    assert fn.calls == 3
    assert sleeps == [0.75, 1.5]


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    sleeps: list[float] = []
    fn = Flaky(*[ServerError("op", "t", f"boom {i}", status=500) for i in range(10)])
    with pytest.raises(ServerError, match="boom 3"):
        call_with_retry(fn, RetryPolicy(max_attempts=4), sleep=sleeps.append)
    assert fn.calls == 4 and len(sleeps) == 3


def test_non_retryable_errors_are_raised_at_once() -> None:
    fn = Flaky(NotFound("op", "t", "gone"))
    with pytest.raises(NotFound):
        call_with_retry(fn, RetryPolicy(), sleep=lambda s: pytest.fail("must not sleep"))
    assert fn.calls == 1


def test_rate_limit_waits_exactly_what_the_service_said() -> None:
    sleeps: list[float] = []
    fn = Flaky(RateLimited("op", "t", "slow down", retry_after=7.0))
    assert call_with_retry(fn, RetryPolicy(), sleep=sleeps.append) == "ok"
    assert sleeps == [7.0]


def test_rate_limit_longer_than_the_cap_is_raised_not_slept() -> None:
    fn = Flaky(RateLimited("op", "t", "come back in an hour", retry_after=3600.0))
    with pytest.raises(RateLimited) as err:
        call_with_retry(fn, RetryPolicy(max_rate_limit_wait=120), sleep=lambda s: pytest.fail("must not sleep"))
    assert err.value.retry_after == 3600.0 and fn.calls == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_epoch_reset_headers_in_seconds_and_milliseconds() -> None:
    now = 1_700_000_000.0
    assert header_epoch_wait({"x-ratelimit-reset": str(int(now) + 42)}, "x-ratelimit-reset", now, millis=False) == 42
    ms = {"X-RateLimit-Requests-Reset": str(int((now + 2.5) * 1000))}
    assert header_epoch_wait(ms, "X-RateLimit-Requests-Reset", now, millis=True) == pytest.approx(2.5)
    assert header_epoch_wait({}, "X-RateLimit-Requests-Reset", now, millis=True) is None


def test_error_messages_name_the_operation_and_target() -> None:
    err = ServerError("create_comment", "ACME-42", "Internal server error", status=503)
    assert str(err) == "create_comment ACME-42 failed (HTTP 503): Internal server error"
    assert (err.operation, err.target, err.status) == ("create_comment", "ACME-42", 503)
