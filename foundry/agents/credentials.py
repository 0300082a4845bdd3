"""Where the push credential of an attempt, and the read credential of a plan, come from.

The job provider puts one token per attempt in Secret `<run>-a<n>-github`
(owned by the Job, mounted only into the pod's `prepare` and `publish` steps).
In production the token is a GitHub App installation token limited to the one
repository with contents:write and pull_requests:write
(foundry.connectors.github_app); for development the operator's static token
(FOUNDRY_GITHUB_TOKEN) stands in. A token never goes into the job input, a
log line, an Event or an exception message.

A plan Job (docs/decisions/0021-plan-job.md) gets a read token instead,
never the push token: from the App, an installation token for the one
repository with contents:read and metadata:read; for development, the
token in FOUNDRY_GITHUB_READ_TOKEN, or none (the plan clones anonymously).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from collections.abc import Mapping
from typing import Any, Protocol

ENV_STATIC_TOKEN = "FOUNDRY_GITHUB_TOKEN"
ENV_STATIC_READ_TOKEN = "FOUNDRY_GITHUB_READ_TOKEN"


@dataclass(frozen=True)
class PushToken:
    token: str = field(repr=False)  # never in a repr, so never in a log by accident
    expires_at: datetime | None = None  # None: does not expire (a static token)

    def expires_iso(self) -> str | None:
        if self.expires_at is None:
            return None
        return self.expires_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenSource(Protocol):
    def push_token(self, repo: str) -> PushToken:
        """A token that may push to `repo` (owner/name) and open its pull requests."""
        ...  # pragma: no cover - protocol

    def read_token(self, repo: str) -> PushToken | None:
        """A token that may only read `repo` (a plan's clone); None: clone anonymously."""
        ...  # pragma: no cover - protocol


class CredentialError(RuntimeError):
    """No push credential can be had; the message says what to configure (never a token)."""


@dataclass(frozen=True)
class StaticTokenSource:
    """The development fallback: the same token for every repository, no expiry. The read token is
    a separate one (`read`), never the push token: a static token's scope cannot be narrowed here."""

    token: str = field(repr=False)
    read: str = field(default="", repr=False)

    def push_token(self, repo: str) -> PushToken:
        if not self.token:
            raise CredentialError("no GitHub token for the agent: configure the GitHub App or set "
                                  f"{ENV_STATIC_TOKEN}")
        return PushToken(self.token)

    def read_token(self, repo: str) -> PushToken | None:
        return PushToken(self.read) if self.read else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "StaticTokenSource":
        env = os.environ if env is None else env
        return cls(str(env.get(ENV_STATIC_TOKEN, "")).strip(), str(env.get(ENV_STATIC_READ_TOKEN, "")).strip())


class AppTokenSource:
    """Repo-scoped installation tokens (contents:write, pull_requests:write) from the
    GitHub App client, foundry.connectors.github_app.GitHubApp.runner_token."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def push_token(self, repo: str) -> PushToken:
        return _token(self.app.runner_token(repo))

    def read_token(self, repo: str) -> PushToken | None:
        """contents:read and metadata:read on `repo` alone (GitHubApp.reader_token)."""
        return _token(self.app.reader_token(repo))


def _token(issued: Any) -> PushToken:
    expires = issued.expires_at
    if isinstance(expires, (int, float)):
        expires = datetime.fromtimestamp(expires, timezone.utc)
    return PushToken(issued.token, expires)


def push_token_source(github: Any, api_url: str | None = None, env: Mapping[str, str] | None = None) -> TokenSource:
    """The App's per-repository tokens when `github` (GitHubSettings) names an App, else
    the static tokens of the environment (development)."""
    from foundry.connectors.github_app import app_from_settings

    kwargs = {"base_url": api_url} if api_url else {}
    app = app_from_settings(github, env, **kwargs)
    if app is not None:
        return AppTokenSource(app)
    return StaticTokenSource.from_env(env)
