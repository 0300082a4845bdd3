"""GitHub REST client: pull requests, their files, checks and reviews.

Reads only; GitHub is the truth for PR state. Every GET is conditional when we
have an ETag for the URL: a 304 answer costs no rate limit and we reuse the
body we kept.
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


class GitHubClient:
    def __init__(
        self,
        token: str,
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
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "foundry",
            },
        )
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        #: Last x-ratelimit-remaining seen (None before the first answer); for metrics.
        self.rate_remaining: int | None = None

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
