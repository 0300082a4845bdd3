"""Opening or updating the attempt's pull request through GitHub's REST API.

`PullsApi` is the little the runner needs; `RestPulls` speaks it to GitHub
(or its stand-in) with the push token. The PR is a draft when Foundry opens
it; a later attempt rewrites its body (the new summary) and leaves its state
alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

API_VERSION = "2022-11-28"


class PullsError(RuntimeError):
    """GitHub refused or failed a pull-request call (the message says which and why; never the token)."""


class PullsApi(Protocol):
    def find_open_pull(self, repo: str, branch: str) -> dict[str, Any] | None: ...
    def create_pull(self, repo: str, *, title: str, head: str, base: str, body: str, draft: bool) -> dict[str, Any]: ...
    def update_pull(self, repo: str, number: int, *, body: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PullRef:
    number: int
    url: str
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "url": self.url, "created": self.created}


class RestPulls:
    """PullsApi over httpx against `api_url` (https://api.github.com or a stand-in)."""

    def __init__(self, api_url: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout, transport=transport, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION, "User-Agent": "foundry-agent-runner"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RestPulls":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def find_open_pull(self, repo: str, branch: str) -> dict[str, Any] | None:
        owner = repo.split("/")[0]
        pulls = self._call("listing pull requests", "GET", f"/repos/{repo}/pulls",
                           params={"head": f"{owner}:{branch}", "state": "open"})
        return pulls[0] if isinstance(pulls, list) and pulls else None

    def create_pull(self, repo: str, *, title: str, head: str, base: str, body: str, draft: bool) -> dict[str, Any]:
        return self._call("opening the pull request", "POST", f"/repos/{repo}/pulls",
                          json={"title": title, "head": head, "base": base, "body": body, "draft": draft})

    def update_pull(self, repo: str, number: int, *, body: str) -> dict[str, Any]:
        return self._call(f"updating pull request #{number}", "PATCH", f"/repos/{repo}/pulls/{number}",
                          json={"body": body})

    def _call(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise PullsError(f"{what} failed: GitHub unreachable ({type(err).__name__}: {err})") from None
        if answer.status_code >= 300:
            raise PullsError(f"{what} failed: HTTP {answer.status_code} {_message(answer)}")
        try:
            return answer.json()
        except ValueError:
            raise PullsError(f"{what} failed: the answer is not JSON") from None


def open_or_update(api: PullsApi, repo: str, *, number: int | None, branch: str, base: str, title: str,
                   body: str) -> PullRef:
    """Update PR `number` (or the open PR of `branch`), else open a draft PR; which, and whether it is new."""
    existing = None
    if number is None:
        existing = api.find_open_pull(repo, branch)
        number = int(existing["number"]) if existing else None
    if number is not None:
        pull = api.update_pull(repo, number, body=body)
        return PullRef(number, str(pull.get("html_url") or (existing or {}).get("html_url") or ""), False)
    pull = api.create_pull(repo, title=title, head=branch, base=base, body=body, draft=True)
    return PullRef(int(pull["number"]), str(pull.get("html_url") or ""), True)


def _message(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.reason_phrase
    if isinstance(body, dict):
        msg = str(body.get("message") or answer.reason_phrase)
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            details = [str(e.get("message") or e.get("code") or e) if isinstance(e, dict) else str(e) for e in errors]
            msg += ": " + "; ".join(details)
        return msg
    return answer.reason_phrase
