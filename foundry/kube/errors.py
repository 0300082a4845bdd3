"""Readable errors for Kubernetes API failures.

The generated client raises ApiException whose str() is a dump of headers and
body. Callers (the bridge, the CLI) need one line a person can act on, plus the
status code to decide what to do, so API failures are translated here.
"""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException


class KubeRequestError(RuntimeError):
    """The API server refused or failed a request; `message` is the server's own words."""

    def __init__(self, action: str, status: int, reason: str, message: str) -> None:
        self.action = action
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{action}: {message} (HTTP {status} {reason})")


class ObjectRejected(KubeRequestError):
    """The object failed schema or CEL validation (HTTP 422/400)."""


class AccessDenied(KubeRequestError):
    """The caller is not authenticated (401) or not authorised (403)."""


class IdentityConflict(RuntimeError):
    """An object with the deterministic name exists but belongs to something else."""


def api_status(exc: ApiException) -> tuple[int, str, str]:
    """(HTTP status, Status.reason, Status.message) of an ApiException, tolerating non-JSON bodies."""
    status = int(exc.status or 0)
    reason = str(exc.reason or "")
    message = ""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict):
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or "")
    if not message:
        message = (str(exc.body).strip() if exc.body else "") or reason or "no details from the server"
    return status, reason, message


def translate(exc: ApiException, action: str) -> KubeRequestError:
    """The KubeRequestError subclass matching `exc`, to be raised `from exc`."""
    status, reason, message = api_status(exc)
    if status in (400, 422):
        cls: type[KubeRequestError] = ObjectRejected
    elif status in (401, 403):
        cls = AccessDenied
    else:
        cls = KubeRequestError
    return cls(action, status, reason, message)
