"""Agent providers: where an approved run's work actually happens.

    provider = make_provider(cfg, api)
    record = provider.dispatch(run, attempt, job_input)   # idempotent per (run, attempt)
    provider.state(run, attempt)   # {'state': running|succeeded|failed|missing, ...}
    provider.cancel(run, attempt)

`job` (default) runs a Kubernetes Job per attempt, `webhook` POSTs a signed
request to an agent service, `local` starts a subprocess (development).
"""

from __future__ import annotations

from typing import Any

from foundry.agents.provider import (FAILED, MISSING, RUNNING, STATES, SUCCEEDED, AgentError, AgentProvider,
                                 AgentUnavailable, attempt_name)
from foundry.config import FoundryConfig

__all__ = ["make_provider", "AgentProvider", "AgentError", "AgentUnavailable", "attempt_name",
           "RUNNING", "SUCCEEDED", "FAILED", "MISSING", "STATES"]


def make_provider(cfg: FoundryConfig, api: Any = None, tokens: Any = None) -> AgentProvider:
    """The provider agent.provider names; `api` (a kubernetes ApiClient) is needed by `job` only,
    and so are `tokens` (foundry.agents.credentials.TokenSource; default: $FOUNDRY_GITHUB_TOKEN)."""
    kind = cfg.agent.provider
    if kind == "job":
        if api is None:
            raise AgentError("the job provider needs a Kubernetes ApiClient")
        from foundry.agents.job_provider import JobProvider

        return JobProvider(cfg, api, tokens)
    if kind == "webhook":
        from foundry.agents.webhook import WebhookProvider

        return WebhookProvider(cfg)
    if kind == "local":
        from foundry.agents.local import LocalProvider

        return LocalProvider(cfg, tokens=tokens)
    raise AgentError(f"agent.provider: unknown provider {kind!r}; expected job, webhook or local")
