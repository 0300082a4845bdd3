"""GitHub REST client: pull requests, their files, checks and reviews.

The operator only reads (GitHub is the truth for PR state); the agent runner
also opens and updates its pull request. Every GET is conditional when we have
an ETag for the URL: a 304 answer costs no rate limit and we reuse the body we
kept.

The token is a string (a static token, or an installation token minted for one
attempt) or a callable returning the current one (the operator's refreshing
installation token, foundry.connectors.github_app.token_source): it is asked
for on every request, and after a 401 the callable's `invalidate` (if any) is
called and the request is sent once more with a fresh token.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode

import httpx

from foundry.connectors.errors import BadResponse, NotFound, RateLimited, ServerError, Unauthorized
from foundry.connectors.retry import RetryPolicy, call_with_retry, header_epoch_wait, parse_retry_after
from foundry.connectors.transport import send

DEFAULT_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
# GitHub's advice for a secondary rate limit that names no wait.
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0

_REPO = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_LINK_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


@dataclass
class _Cached:
    etag: str
    body: Any
    link: str | None


class PullRequestExists(BadResponse):
    """GitHub refused to open a pull request: one is already open for that head branch."""


class _TokenAuth(httpx.Auth):
    """Authorization from a token callable, asked again (once) after a 401."""

    def __init__(self, source: Callable[[], str]) -> None:
        self._source = source

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        token = self._source()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        invalidate = getattr(self._source, "invalidate", None)
        if response.status_code == 401 and invalidate is not None:
            invalidate(token)
            request.headers["Authorization"] = f"Bearer {self._source()}"
            yield request


class GitHubClient:
    def __init__(
        self,
        token: str | Callable[[], str],
        *,
        base_url: str = DEFAULT_URL,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        per_page: int = 100,
        cache_size: int = 1024,
    ) -> None:
        if not token:
            raise ValueError("GitHubClient needs a token")
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.per_page = per_page
        self._sleep = sleep
        self._clock = clock
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "foundry",
        }
        if isinstance(token, str):
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(timeout=timeout, transport=transport, headers=headers,
                                  auth=None if isinstance(token, str) else _TokenAuth(token))
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        #: Last x-ratelimit-remaining seen (None before the first answer); for metrics.
        self.rate_remaining: int | None = None
        self._token_source = None if isinstance(token, str) else token
        self._login: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations -------------------------------------------------------

    def get_pull(self, repo: str, number: int) -> dict[str, Any]:
        target = _pr_target(repo, number)
        body, _ = self._get("get_pull", target, f"/repos/{repo}/pulls/{int(number)}")
        return body

    def list_pull_files(self, repo: str, number: int) -> list[dict[str, Any]]:
        target = _pr_target(repo, number)
        return self._get_all("list_pull_files", target, f"/repos/{repo}/pulls/{int(number)}/files")

    def list_reviews(self, repo: str, number: int) -> list[dict[str, Any]]:
        target = _pr_target(repo, number)
        return self._get_all("list_reviews", target, f"/repos/{repo}/pulls/{int(number)}/reviews")

    def list_check_runs(self, repo: str, sha: str) -> list[dict[str, Any]]:
        target = _sha_target(repo, sha)
        return self._get_all("list_check_runs", target, f"/repos/{repo}/commits/{sha}/check-runs", key="check_runs")

    def combined_status(self, repo: str, sha: str) -> dict[str, Any]:
        target = _sha_target(repo, sha)
        body, _ = self._get("combined_status", target, f"/repos/{repo}/commits/{sha}/status")
        return body

    def get_commit(self, repo: str, sha: str) -> dict[str, Any]:
        """GitHub's commit object: `commit.author`, `commit.message`, `author` (the user, if known)."""
        target = _sha_target(repo, sha)
        body, _ = self._get("get_commit", target, f"/repos/{repo}/commits/{sha}")
        return body

    def login(self) -> str:
        """Who this client acts as on GitHub: the App's `<slug>[bot]`, else the token's user (cached)."""
        if self._login is None:
            from_app = getattr(self._token_source, "login", None)
            if from_app is not None:
                self._login = str(from_app())
            else:
                body, _ = self._get("get_authenticated_user", "user", "/user")
                self._login = str(body["login"])
        return self._login

    def find_pull_by_branch(self, repo: str, branch: str) -> dict[str, Any] | None:
        """The PR whose head is `branch` in `repo` (open first, else the newest), or None."""
        _check_repo(repo)
        if not branch or " " in branch:
            raise ValueError(f"bad branch name {branch!r}")
        owner = repo.split("/")[0]
        pulls = self._get_all("find_pull_by_branch", f"{repo}:{branch}", f"/repos/{repo}/pulls",
                              {"head": f"{owner}:{branch}", "state": "all"})
        if not pulls:
            return None
        open_ = [p for p in pulls if p.get("state") == "open"]
        return max(open_ or pulls, key=lambda p: p["number"])

    def get_check_run(self, repo: str, check_run_id: int) -> dict[str, Any]:
        target = _id_target(repo, "check run", check_run_id)
        body, _ = self._get("get_check_run", target, f"/repos/{repo}/check-runs/{int(check_run_id)}")
        return body

    def list_check_run_annotations(self, repo: str, check_run_id: int) -> list[dict[str, Any]]:
        """A check run's annotations: path, start_line, end_line, annotation_level, title, message, raw_details."""
        target = _id_target(repo, "check run", check_run_id)
        return self._get_all("list_check_run_annotations", target,
                             f"/repos/{repo}/check-runs/{int(check_run_id)}/annotations")

    def list_review_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Every review comment on the PR's diff: path, line, body, user.login, pull_request_review_id."""
        target = _pr_target(repo, number)
        return self._get_all("list_review_comments", target, f"/repos/{repo}/pulls/{int(number)}/comments")

    def list_comments_for_review(self, repo: str, number: int, review_id: int) -> list[dict[str, Any]]:
        """The comments of one review (what a changes-requested review asked for, line by line)."""
        target = _pr_target(repo, number)
        _id_target(repo, "review", review_id)
        return self._get_all("list_comments_for_review", target,
                             f"/repos/{repo}/pulls/{int(number)}/reviews/{int(review_id)}/comments")

    # -- writes (the runner's) ---------------------------------------------------

    def create_pull(self, repo: str, *, head: str, base: str, title: str, body: str = "",
                    draft: bool = True) -> dict[str, Any]:
        """Open a pull request from branch `head` into `base`. PullRequestExists when one is open
        for `head` already. Not retried after the request may have reached GitHub (a second
        create would meet PullRequestExists; open_or_update_pull handles that)."""
        _check_repo(repo)
        _check_branch(head)
        _check_branch(base)
        if not title:
            raise ValueError("a pull request needs a title")
        payload = {"title": title, "head": head, "base": base, "body": body, "draft": bool(draft)}
        return self._write("create_pull", f"{repo}:{head}", "POST", f"/repos/{repo}/pulls", payload,
                           expect=201, retry_if=lambda e: e.retryable and not e.maybe_applied)

    def update_pull(self, repo: str, number: int, *, title: str | None = None, body: str | None = None,
                    state: str | None = None, base: str | None = None) -> dict[str, Any]:
        """Change a pull request's title, body, state (open|closed) or base; only what is given."""
        target = _pr_target(repo, number)
        if state is not None and state not in ("open", "closed"):
            raise ValueError(f"state must be open or closed, got {state!r}")
        payload = {k: v for k, v in (("title", title), ("body", body), ("state", state), ("base", base))
                   if v is not None}
        # Setting fields to values is idempotent: every retryable failure is retried.
        return self._write("update_pull", target, "PATCH", f"/repos/{repo}/pulls/{int(number)}", payload,
                           expect=200, retry_if=lambda e: e.retryable)

    def open_or_update_pull(self, repo: str, *, head: str, base: str, title: str, body: str = "",
                            draft: bool = True) -> tuple[dict[str, Any], bool]:
        """(pull request, created): the open PR for `head` gets `title` and `body`, else a new one
        is opened (a draft by default). Safe to repeat and to race with another caller."""
        existing = self.find_pull_by_branch(repo, head)
        if existing is not None and existing.get("state") == "open":
            return self.update_pull(repo, int(existing["number"]), title=title, body=body), False
        try:
            return self.create_pull(repo, head=head, base=base, title=title, body=body, draft=draft), True
        except PullRequestExists:
            existing = self.find_pull_by_branch(repo, head)
            if existing is None or existing.get("state") != "open":
                raise
            return self.update_pull(repo, int(existing["number"]), title=title, body=body), False

    # -- transport ------------------------------------------------------------

    def _get_all(self, operation: str, target: str, path: str, params: dict[str, str] | None = None,
                 *, key: str | None = None) -> list[dict[str, Any]]:
        query = dict(params or {}, per_page=str(self.per_page))
        url: str | None = f"{self.base_url}{path}?{urlencode(query)}"
        items: list[dict[str, Any]] = []
        pages = 0
        while url:
            pages += 1
            if pages > 1000:
                raise BadResponse(operation, target, "more than 1000 pages; refusing to follow further")
            body, link = self._get_url(operation, target, url)
            page = body.get(key) if key and isinstance(body, dict) else body
            if not isinstance(page, list):
                raise BadResponse(operation, target, f"expected a list, got {type(page).__name__}")
            items.extend(page)
            match = _LINK_NEXT.search(link or "")
            url = match.group(1) if match else None
        return items

    def _write(self, operation: str, target: str, method: str, path: str, payload: dict[str, Any], *,
               expect: int, retry_if: Callable[[Any], bool]) -> dict[str, Any]:
        url = f"{self.base_url}{path}"

        def once() -> dict[str, Any]:
            response = send(self._http, operation, target, method, url, json=payload)
            status = response.status_code
            if status == 422:
                message = _validation_message(response)
                kind = PullRequestExists if "already exists" in message else BadResponse
                raise kind(operation, target, f"GitHub refused it: {message}", status=status)
            if status == expect:
                remaining = response.headers.get("x-ratelimit-remaining")
                if remaining is not None and remaining.isdigit():
                    self.rate_remaining = int(remaining)
                try:
                    return response.json()
                except ValueError as err:
                    raise BadResponse(operation, target, f"response is not JSON: {response.text[:200]!r}") from err
            body, _ = self._read(operation, target, url, response, None)  # raises the typed error
            raise BadResponse(operation, target, f"unexpected status {status}", status=status)

        return call_with_retry(once, self.retry, sleep=self._sleep, retry_if=retry_if)

    def _get(self, operation: str, target: str, path: str) -> tuple[Any, str | None]:
        return self._get_url(operation, target, f"{self.base_url}{path}")

    def _get_url(self, operation: str, target: str, url: str) -> tuple[Any, str | None]:
        def once() -> tuple[Any, str | None]:
            with self._lock:
                cached = self._cache.get(url)
            headers = {"If-None-Match": cached.etag} if cached else {}
            response = send(self._http, operation, target, "GET", url, headers=headers)
            return self._read(operation, target, url, response, cached)

        return call_with_retry(once, self.retry, sleep=self._sleep)

    def _read(self, operation: str, target: str, url: str, response: httpx.Response,
              cached: _Cached | None) -> tuple[Any, str | None]:
        status = response.status_code
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.isdigit():
            self.rate_remaining = int(remaining)
        if status == 304 and cached is not None:
            with self._lock:
                self._cache.move_to_end(url, last=True)
            return cached.body, cached.link
        message = _message(response)
        if status in (403, 429) and self._is_rate_limit(response, message):
            raise RateLimited(operation, target, f"rate limited: {message}",
                              retry_after=self._rate_limit_wait(response), status=status)
        if status >= 500:
            raise ServerError(operation, target, message, status=status)
        if status in (401, 403):
            raise Unauthorized(operation, target, f"GitHub refused the token: {message}", status=status)
        if status == 404:
            raise NotFound(operation, target, message, status=status)
        if status != 200:
            raise BadResponse(operation, target, f"unexpected status: {message}", status=status)
        try:
            body = response.json()
        except ValueError as err:
            raise BadResponse(operation, target, f"response is not JSON: {response.text[:200]!r}") from err
        link = response.headers.get("Link")
        etag = response.headers.get("ETag")
        if etag:
            with self._lock:
                self._cache[url] = _Cached(etag, body, link)
                self._cache.move_to_end(url, last=True)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return body, link

    @staticmethod
    def _is_rate_limit(response: httpx.Response, message: str) -> bool:
        return (
            response.status_code == 429
            or "retry-after" in response.headers
            or response.headers.get("x-ratelimit-remaining") == "0"
            or "rate limit" in message.lower()
        )

    def _rate_limit_wait(self, response: httpx.Response) -> float:
        now = self._clock()
        wait = parse_retry_after(response.headers.get("retry-after"), now)
        if wait is None and response.headers.get("x-ratelimit-remaining") == "0":
            wait = header_epoch_wait(response.headers, "x-ratelimit-reset", now, millis=False)
        return SECONDARY_LIMIT_DEFAULT_WAIT if wait is None else wait


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.reason_phrase or f"HTTP {response.status_code}"


def _validation_message(response: httpx.Response) -> str:
    """GitHub's 422: "Validation Failed" plus the errors' own messages or fields."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or "HTTP 422"
    if not isinstance(body, dict):
        return "HTTP 422"
    details = []
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            details.append(str(err.get("message") or f"{err.get('field')} {err.get('code')}"))
        else:
            details.append(str(err))
    message = str(body.get("message") or "Validation Failed")
    return f"{message}: {'; '.join(details)}" if details else message


def _check_branch(branch: str) -> None:
    if not isinstance(branch, str) or not branch or " " in branch or ".." in branch:
        raise ValueError(f"bad branch name {branch!r}")


def _id_target(repo: str, what: str, value: int) -> str:
    _check_repo(repo)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} id must be a positive integer, got {value!r}")
    return f"{repo} {what} {value}"


def _check_repo(repo: str) -> None:
    if not isinstance(repo, str) or not _REPO.match(repo):
        raise ValueError(f"repository must be 'owner/name', got {repo!r}")


def _pr_target(repo: str, number: int) -> str:
    _check_repo(repo)
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ValueError(f"pull request number must be a positive integer, got {number!r}")
    return f"{repo}#{number}"


def _sha_target(repo: str, sha: str) -> str:
    _check_repo(repo)
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise ValueError(f"commit SHA must be 7-40 lowercase hex digits, got {sha!r}")
    return f"{repo}@{sha[:12]}"
