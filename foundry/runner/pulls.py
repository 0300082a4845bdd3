"""Opening or updating the attempt's pull request (foundry.connectors.github underneath).

A first attempt opens a draft PR for the run's branch, or updates the one
already open for it (a re-run after the push went through). A remediation
knows its PR's number and rewrites its body (the new summary), leaving its
title, draft state and reviewers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from foundry.connectors.errors import ConnectorError


class PullsError(RuntimeError):
    """GitHub refused or failed a pull-request call (the message says which and why; never the token)."""


class PullsApi(Protocol):
    """What the runner uses of foundry.connectors.github.GitHubClient."""

    def update_pull(self, repo: str, number: int, *, body: str | None = None) -> dict[str, Any]: ...
    def open_or_update_pull(self, repo: str, *, head: str, base: str, title: str, body: str = "",
                            draft: bool = True) -> tuple[dict[str, Any], bool]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PullRef:
    number: int
    url: str
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "url": self.url, "created": self.created}


def client(api_url: str, token: str) -> PullsApi:
    """The GitHub REST client the runner talks to (GitHub, or the stand-in in tests)."""
    from foundry.connectors.github import GitHubClient

    return GitHubClient(token, base_url=api_url, timeout=30.0)


def open_or_update(api: PullsApi, repo: str, *, number: int | None, branch: str, base: str, title: str,
                   body: str) -> PullRef:
    try:
        if number is not None:
            pull, created = api.update_pull(repo, number, body=body), False
        else:
            pull, created = api.open_or_update_pull(repo, head=branch, base=base, title=title, body=body, draft=True)
    except ConnectorError as err:
        what = f"updating pull request #{number}" if number is not None else "opening the pull request"
        raise PullsError(f"{what} failed: {err}") from None
    return PullRef(int(pull["number"]), str(pull.get("html_url") or ""), created)
