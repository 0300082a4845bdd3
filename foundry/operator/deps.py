"""Everything the reconcile functions talk to, in one object passed explicitly.

Tests build a Deps pointing at the local API server, PostgreSQL and the
Linear/GitHub stand-ins; production builds it from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from kubernetes import client
from sqlalchemy import Engine

from foundry.kube.client import KubeConfigError, load_configuration
from foundry.operator.kubeio import CONNECT_TIMEOUT, READ_TIMEOUT, bound_requests, fence_writes
from foundry.operator.leadership import AlwaysLeading, Leadership
from foundry.operator.locks import RunLocks
from foundry.operator.metrics import OperatorMetrics
from foundry.operator.pool import ReconcilePool

# Secrets come from the environment, never from the config file.
ENV_LINEAR_KEY = "FOUNDRY_LINEAR_API_KEY"
ENV_LINEAR_URL = "FOUNDRY_LINEAR_URL"
ENV_GITHUB_TOKEN = "FOUNDRY_GITHUB_TOKEN"
ENV_GITHUB_URL = "FOUNDRY_GITHUB_URL"


# Seconds: to open a PostgreSQL connection, and for any one statement (the
# operator's are single-row writes and bounded batches).
DB_CONNECT_TIMEOUT = 5
DB_STATEMENT_TIMEOUT = 30.0


class DepsError(RuntimeError):
    """The operator cannot start: a setting is missing or wrong (the message says which)."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Deps:
    api: client.ApiClient
    engine: Engine
    linear: Any  # foundry.connectors.linear.LinearClient
    github: Any  # foundry.connectors.github.GitHubClient
    config: Any  # foundry.config.Config
    agents: Any  # foundry.agents provider: dispatch / state / cancel
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    locks: RunLocks = field(default_factory=RunLocks)
    clock: Callable[[], datetime] = utc_now
    # Where reconciles run; the operator's startup replaces it with one sized by operator.workers.
    pool: ReconcilePool = field(default_factory=ReconcilePool)
    # (connect, read) seconds for each Kubernetes request (foundry.operator.kubeio.bound_requests).
    kube_timeouts: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)
    # Whether this process may act (foundry.operator.leadership); the Lease elector replaces it.
    leadership: Leadership = field(default_factory=AlwaysLeading)

    def __post_init__(self) -> None:
        # Every Kubernetes call of the operator (and of the Job provider, which shares
        # this client) gets a timeout: a silent API server must not hold a worker forever.
        bound_requests(self.api, connect=self.kube_timeouts[0], read=self.kube_timeouts[1])
        # Every write through it asks the leadership first (looked up at the call: the elector
        # replaces it at startup).
        fence_writes(self.api, lambda: self.leadership.fence())

    def close(self) -> None:
        for closer in (self.pool.close, getattr(self.linear, "close", None), getattr(self.github, "close", None),
                       self.engine.dispose, self.api.close):
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - shutting down; nothing useful to do
                    pass


def kube_api_client() -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere KUBECONFIG / ~/.kube/config (foundry.kube.client).

    Deps bounds its requests (kube_timeouts) when it is built."""
    try:
        return client.ApiClient(load_configuration())
    except KubeConfigError as err:
        raise DepsError(f"no Kubernetes credentials: {err} (set KUBECONFIG or run in a pod)") from err


def _client_or_unconfigured(env: str, chart_value: str, service: str, make: Callable[[str], Any]) -> Any:
    """The real client when its credential is set; else one that refuses each call (retryably) saying
    which setting is missing, so the operator still starts and reports (foundry.connectors.unconfigured)."""
    value = os.environ.get(env, "").strip()
    if value:
        return make(value)
    import logging

    from foundry.connectors.unconfigured import UnconfiguredClient

    client_ = UnconfiguredClient(service, env, chart_value)
    logging.getLogger("foundry.operator").warning("%s; runs that need %s wait for it", client_.reason, service)
    return client_


def service_transport() -> Any:
    """The HTTP transport of one of the operator's service clients (Linear, GitHub): a request
    to a service that has just timed out fails at once instead of costing a worker another
    timeout (foundry.connectors.breaker), so runs that do not need that service keep moving."""
    from foundry.connectors.breaker import BreakerTransport

    return BreakerTransport()


def _check_audit_key() -> None:
    """A bad FOUNDRY_AUDIT_KEY stops the start (AuditKeyError says why); none is allowed, with a warning."""
    import logging

    from foundry.db.audit_chain import ENV_KEY, keyring_from_env

    if keyring_from_env().current is None:
        logging.getLogger("foundry.operator").warning(
            "%s is not set: the audit chain is unkeyed (edits show, a cut-off tail does not)", ENV_KEY)


def build_deps(config_path: str | None = None) -> Deps:
    """Deps from the environment: FOUNDRY_CONFIG (or config_path), FOUNDRY_DATABASE_URL,
    KUBECONFIG, FOUNDRY_LINEAR_API_KEY, FOUNDRY_GITHUB_TOKEN, and optionally
    FOUNDRY_LINEAR_URL / FOUNDRY_GITHUB_URL over the config's api_url."""
    from foundry.agents import make_provider
    from foundry.agents.credentials import push_token_source
    from foundry.config import load_config
    from foundry.connectors.github import GitHubClient
    from foundry.connectors.linear import LinearClient
    from foundry.db.engine import make_engine

    cfg = load_config(config_path or os.environ.get("FOUNDRY_CONFIG"))
    _check_audit_key()
    api = kube_api_client()
    # The environment wins over the config file, so one config serves several installations.
    linear_url = os.environ.get(ENV_LINEAR_URL) or cfg.linear.api_url
    github_url = os.environ.get(ENV_GITHUB_URL) or cfg.github.api_url
    from foundry.agents.credentials import AppTokenSource
    from foundry.connectors.github_app import app_from_settings, token_source

    # With a GitHub App configured, the operator reads GitHub with its own installation
    # token (minted again before it expires) and each attempt gets a per-repository one.
    app = app_from_settings(cfg.github, base_url=github_url)
    if app is not None:
        github: Any = GitHubClient(token_source(app), base_url=github_url, transport=service_transport())
        tokens: Any = AppTokenSource(app)
    else:
        github = _client_or_unconfigured(ENV_GITHUB_TOKEN, "secrets.githubToken", "GitHub",
                                         lambda token: GitHubClient(token, base_url=github_url,
                                                                    transport=service_transport()))
        tokens = push_token_source(cfg.github, github_url)  # the static token (development)
    return Deps(
        api=api,
        # A PostgreSQL that stops answering fails the call (RetryLater) instead of holding a worker.
        engine=make_engine(connect_timeout=DB_CONNECT_TIMEOUT, statement_timeout=DB_STATEMENT_TIMEOUT),
        linear=_client_or_unconfigured(ENV_LINEAR_KEY, "secrets.linearApiKey", "Linear",
                                       lambda key: LinearClient(key, url=linear_url,
                                                                transport=service_transport())),
        github=github,
        config=cfg,
        agents=make_provider(cfg, api, tokens),
    )
