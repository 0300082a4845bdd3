"""Typed errors raised by the Linear and GitHub clients.

Every error names the operation and the target (an issue id, a PR) so a log
line or a run's status message says what failed without a traceback.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class: `operation` failed against `target` (issue id, "owner/repo#12")."""

    #: Whether trying the same request again may succeed (network, 5xx, timeouts).
    retryable: bool = False
    #: Whether the service may have applied the request anyway. A mutation that
    #: is not idempotent (creating a comment) is retried blindly only when False.
    maybe_applied: bool = True

    def __init__(self, operation: str, target: str, message: str, *, status: int | None = None) -> None:
        self.operation = operation
        self.target = target
        self.message = message
        self.status = status
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.operation} {self.target} failed{status}: {self.message}"


class RateLimited(ConnectorError):
    """The service asked us to slow down; `retry_after` is the wait it gave, in seconds."""

    retryable = True
    maybe_applied = False

    def __init__(self, operation: str, target: str, message: str, *, retry_after: float | None,
                 status: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(operation, target, message, status=status)


class Timeout(ConnectorError):
    """No answer within the client's timeout. The request may or may not have been applied."""

    retryable = True


class Paused(ConnectorError):
    """Not sent: the service stopped answering moments ago (foundry.connectors.breaker).
    Retryable later; retrying at once would only fail the same way."""

    retryable = True
    maybe_applied = False


class NetworkError(ConnectorError):
    """The connection failed after the request may have been sent (reset, broken pipe)."""

    retryable = True


class ConnectFailed(NetworkError):
    """The connection could not be opened: the request never reached the service."""

    maybe_applied = False


class ServerError(ConnectorError):
    """The service answered 5xx."""

    retryable = True


class NotFound(ConnectorError):
    """The issue, PR, team or state does not exist (or the credentials cannot see it)."""


class Unauthorized(ConnectorError):
    """The API key or token was rejected (401, or 403 that is not a rate limit)."""


class BadResponse(ConnectorError):
    """The service answered something this client cannot use (bad JSON, GraphQL errors)."""
