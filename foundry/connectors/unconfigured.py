"""A stand-in for the Linear or GitHub client while its credential is not set.

`helm install foundry helm/foundry` with no values must start an operator that
is Ready and says what is missing, not a pod that crashes or never starts. Until
the credential arrives, every call refuses with NotConfigured, which is
retryable: a run that needs Linear or GitHub waits (with backoff, its status and
Events naming the setting) instead of failing, and carries on once `helm upgrade`
sets the credential (the pod restarts with it: the chart's secret checksum changes).
"""

from __future__ import annotations

from typing import Any, NoReturn

from foundry.connectors.errors import ConnectorError


class NotConfigured(ConnectorError):
    """The client's credential is not set; nothing was sent."""

    retryable = True
    maybe_applied = False


class UnconfiguredClient:
    """Refuses every operation, naming the environment variable and the chart value that provide it."""

    # Plain attributes some callers read (getattr with a default) rather than call.
    url = None
    base_url = None
    rate_remaining = None

    def __init__(self, service: str, env: str, chart_value: str) -> None:
        self.service = service
        self.reason = f"{env} is not set (chart value {chart_value}): Foundry cannot reach {service} until it is"

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
            raise NotConfigured(name, self.service, self.reason)

        return refuse
