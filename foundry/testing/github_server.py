"""A local GitHub: the REST subset Foundry reads, a control API to play the agent
and the humans, and webhooks signed like GitHub's.

    with GitHubServer(webhook_url=bridge_url, webhook_secret="s", retry_scale=0.001) as gh:
        gh.add_repo("acme/api", files={"README.md": "hi\\n"})
        sha = gh.commit("acme/api", "foundry/acme-42-a1", {"app.py": "print(1)\\n"})
        number = gh.open_pr("acme/api", "foundry/acme-42-a1", "ACME-42: health endpoint")
        gh.set_check("acme/api", sha, "failure")
        client = GitHubClient(gh.token, base_url=gh.url)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlencode

from aiohttp import web

from foundry.testing import github_payloads as P
from foundry.testing.faults import Faults
from foundry.testing.github_model import (
    CheckRun, Commit, CommitStatus, IssueComment, Pull, Repo, Review, file_changes, now_iso,
)
from foundry.testing.server_thread import ServerThread, control_routes
from foundry.testing.webhook_sender import Delivery, WebhookControls, WebhookSender

CONTROLS = frozenset({"add_repo", "create_branch", "commit", "open_pr", "set_check", "set_status", "submit_review",
                      "comment", "merge", "close", "ping", "redeliver", "duplicate", "pull_json", "branch_sha"})
REVIEW_STATES = frozenset({"APPROVED", "CHANGES_REQUESTED", "COMMENTED"})
CONCLUSIONS = frozenset({"success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required"})
STATUS_STATES = frozenset({"error", "failure", "pending", "success"})
RATE_LIMIT = 5000


class GitHubServer(ServerThread, WebhookControls):
    def __init__(
        self,
        *,
        token: str = "ghp_foundry_test_token",
        webhook_url: str | None = None,
        webhook_secret: str = "github-webhook-secret",
        retry_scale: float = 1.0,
        # GitHub does not retry a failed delivery by itself (a human or an app redelivers),
        # and gives a receiver 10 s; pass RETRY_DELAYS to exercise retries anyway.
        retry_delays: tuple[float, ...] = (),
        webhook_timeout: float = 10.0,
        installation_id: int | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.webhook_secret = webhook_secret
        self.installation_id = installation_id
        self.hook_id = 400000000 + (uuid.uuid4().int % 1000000)
        self.faults = Faults()
        self._webhook_url = webhook_url
        self._webhook_opts = dict(retry_delays=retry_delays, retry_scale=retry_scale, timeout=webhook_timeout)
        self.webhooks: WebhookSender | None = None
        self._lock = threading.RLock()
        self._ids = itertools.count(1000)
        self.repos: dict[str, Repo] = {}
        self.commits: dict[str, Commit] = {}
        self.pulls: dict[tuple[str, int], Pull] = {}
        self.check_runs: list[CheckRun] = []
        self.statuses: list[CommitStatus] = []
        self.reviews: list[Review] = []
        self.issue_comments: list[IssueComment] = []
        self._next_number: dict[str, int] = {}
        self.rate_remaining = RATE_LIMIT
        self.rate_reset = int(time.time()) + 3600
        self._created_at = now_iso()

    # -- lifecycle ----------------------------------------------------------

    def build_app(self) -> web.Application:
        assert self.loop is not None
        self.webhooks = WebhookSender(self.loop, self._webhook_headers, url=self._webhook_url, **self._webhook_opts)  # type: ignore[arg-type]
        app = web.Application()
        r = "/repos/{owner}/{repo}"
        app.add_routes([
            web.get(f"{r}/pulls", self._route("pulls/list", self._list_pulls)),
            web.get(f"{r}/pulls/{{number:\\d+}}", self._route("pulls/get", self._get_pull)),
            web.get(f"{r}/pulls/{{number:\\d+}}/files", self._route("pulls/list-files", self._list_files)),
            web.get(f"{r}/pulls/{{number:\\d+}}/reviews", self._route("pulls/list-reviews", self._list_reviews)),
            web.get(f"{r}/commits/{{ref}}/check-runs", self._route("checks/list-for-ref", self._list_check_runs)),
            web.get(f"{r}/commits/{{ref}}/status", self._route("repos/get-combined-status-for-ref", self._status)),
            *control_routes(self, CONTROLS),
        ])
        return app

    async def on_stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.aclose()

    def set_webhook_url(self, url: str | None) -> None:
        self._webhook_url = url
        if self.webhooks is not None:
            self.webhooks.url = url

    # -- control: repositories and commits ----------------------------------------

    def add_repo(self, full_name: str, *, default_branch: str = "main", files: dict[str, str] | None = None,
                 private: bool = False) -> str:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repository must be 'owner/name', got {full_name!r}")
        with self._lock:
            if full_name in self.repos:
                raise ValueError(f"repository {full_name} already exists")
            repo = Repo(next(self._ids), owner, name, default_branch, private, now_iso())
            root = self._new_commit(None, dict(files or {"README.md": f"# {name}\n"}), "Initial commit", owner)
            repo.branches[default_branch] = root.sha
            self.repos[full_name] = repo
            self._next_number[full_name] = 1
        return full_name

    def create_branch(self, repo: str, branch: str, *, from_branch: str | None = None) -> str:
        with self._lock:
            r = self._repo(repo)
            if branch in r.branches:
                raise ValueError(f"branch {branch} already exists in {repo}")
            source = from_branch or r.default_branch
            if source not in r.branches:
                raise KeyError(f"no branch {source!r} in {repo}")
            r.branches[branch] = r.branches[source]
            return r.branches[branch]

    def commit(self, repo: str, branch: str, files: dict[str, str | None], message: str = "Update files",
               *, author: str = "foundry-agent") -> str:
        """Push one commit to `branch` (created from the default branch if new). A file
        mapped to None is deleted. Pushing to a PR's head sends `synchronize`."""
        with self._lock:
            r = self._repo(repo)
            if branch not in r.branches:
                r.branches[branch] = r.branches[r.default_branch]
            parent = self.commits[r.branches[branch]]
            tree = dict(parent.tree)
            for path, content in files.items():
                if content is None:
                    tree.pop(path, None)
                else:
                    tree[path] = content
            new = self._new_commit(parent.sha, tree, message, author)
            r.branches[branch] = new.sha
            touched = [p for p in self.pulls.values() if p.repo == repo and p.head_ref == branch and p.state == "open"]
            for pr in touched:
                pr.head_sha = new.sha
                pr.updated_at = now_iso()
        for pr in touched:
            self._emit_pull(pr, "synchronize", author, extra={"before": parent.sha, "after": new.sha})
        return new.sha

    def branch_sha(self, repo: str, branch: str) -> str:
        with self._lock:
            r = self._repo(repo)
            if branch not in r.branches:
                raise KeyError(f"no branch {branch!r} in {repo}")
            return r.branches[branch]

    # -- control: pull requests ---------------------------------------------------

    def open_pr(self, repo: str, head: str, title: str, body: str = "", *, base: str | None = None,
                user: str = "foundry-agent", draft: bool = False) -> int:
        with self._lock:
            r = self._repo(repo)
            base = base or r.default_branch
            if head not in r.branches:
                raise KeyError(f"no branch {head!r} in {repo}")
            if base not in r.branches:
                raise KeyError(f"no base branch {base!r} in {repo}")
            if any(p.repo == repo and p.head_ref == head and p.state == "open" for p in self.pulls.values()):
                raise ValueError(f"a pull request for {head} is already open in {repo}")
            number = self._next_number[repo]
            self._next_number[repo] += 1
            stamp = now_iso()
            pr = Pull(next(self._ids), number, repo, title, body, user, head, r.branches[head], base,
                      r.branches[base], draft, stamp, stamp)
            self.pulls[(repo, number)] = pr
        self._emit_pull(pr, "opened", user)
        return number

    def merge(self, repo: str, number: int, *, user: str = "octocat") -> str:
        with self._lock:
            pr = self._pull(repo, number)
            if pr.state != "open":
                raise ValueError(f"{repo}#{number} is not open")
            r = self._repo(repo)
            head = self.commits[pr.head_sha]
            merge = self._new_commit(r.branches[pr.base_ref], dict(head.tree), f"Merge pull request #{number}", user)
            r.branches[pr.base_ref] = merge.sha
            stamp = now_iso()
            pr.state, pr.merged, pr.merged_at, pr.merged_by = "closed", True, stamp, user
            pr.closed_at = pr.updated_at = stamp
            pr.merge_commit_sha = merge.sha
        self._emit_pull(pr, "closed", user)
        return merge.sha

    def close(self, repo: str, number: int, *, user: str = "octocat") -> None:
        with self._lock:
            pr = self._pull(repo, number)
            if pr.state != "open":
                raise ValueError(f"{repo}#{number} is not open")
            pr.state = "closed"
            pr.closed_at = pr.updated_at = now_iso()
        self._emit_pull(pr, "closed", user)

    def submit_review(self, repo: str, number: int, user: str, state: str, body: str = "") -> int:
        state = state.upper()
        if state not in REVIEW_STATES:
            raise ValueError(f"review state must be one of {sorted(REVIEW_STATES)}, got {state!r}")
        with self._lock:
            pr = self._pull(repo, number)
            rv = Review(next(self._ids), repo, number, user, state, body, pr.head_sha, now_iso())
            self.reviews.append(rv)
            r = self._repo(repo)
            payload = {"action": "submitted", "review": P.review(self.url, r, rv, webhook=True),
                       "pull_request": P.pull_request(self.url, r, pr, files=self._files(pr),
                                                      commits=self._commit_count(pr), simple=True)}
        self._emit("pull_request_review", r, payload, user)
        return rv.id

    def comment(self, repo: str, number: int, user: str, body: str) -> int:
        with self._lock:
            pr = self._pull(repo, number)
            c = IssueComment(next(self._ids), repo, number, user, body, now_iso())
            self.issue_comments.append(c)
            pr.comments += 1
            r = self._repo(repo)
            payload = {"action": "created", "issue": P.issue_for_pull(self.url, r, pr),
                       "comment": P.issue_comment(self.url, r, c)}
        self._emit("issue_comment", r, payload, user)
        return c.id

    # -- control: checks -----------------------------------------------------------

    def set_check(self, repo: str, sha: str, conclusion: str | None, *, name: str = "ci",
                  status: str = "completed") -> int:
        """Create or update check run `name` on `sha`. Completing it sends `check_run`
        `completed`, and `check_suite` `completed` once every run of the suite is done."""
        if status == "completed" and conclusion not in CONCLUSIONS:
            raise ValueError(f"conclusion must be one of {sorted(CONCLUSIONS)}, got {conclusion!r}")
        if status not in ("queued", "in_progress", "completed"):
            raise ValueError(f"status must be queued, in_progress or completed, got {status!r}")
        with self._lock:
            r = self._repo(repo)
            sha = self._resolve(r, sha)
            runs = [c for c in self.check_runs if c.repo == repo and c.head_sha == sha]
            run = next((c for c in runs if c.name == name), None)
            stamp = now_iso()
            created = run is None
            if run is None:
                suite_id = runs[0].suite_id if runs else next(self._ids)
                run = CheckRun(next(self._ids), suite_id, repo, sha, name, status, None, stamp, None)
                self.check_runs.append(run)
                runs.append(run)
            run.status = status
            run.conclusion = conclusion if status == "completed" else None
            run.completed_at = stamp if status == "completed" else None
            # GitHub names the transition: a finished run is "completed", a new one "created".
            action = "completed" if status == "completed" else "created" if created else None
            pulls = self._pulls_at(repo, sha)
            branch = next((b for b, s in r.branches.items() if s == sha), None)
            commit = self.commits.get(sha)
            short_suite = P.check_suite(self.url, r, runs, branch, commit, pulls, full=False)
            run_payload = {"action": action, "check_run": P.check_run(self.url, r, run, short_suite, pulls)}
            suite_payload = None
            if all(c.status == "completed" for c in runs):
                suite_payload = {"action": "completed",
                                 "check_suite": P.check_suite(self.url, r, runs, branch, commit, pulls, full=True)}
        if action is not None:
            self._emit("check_run", r, run_payload, "github-actions[bot]")
        if suite_payload is not None:
            self._emit("check_suite", r, suite_payload, "github-actions[bot]")
        return run.id

    def set_status(self, repo: str, sha: str, state: str, *, context: str = "ci/foundry", description: str = "") -> int:
        """Add a commit status (the older API that feeds the combined status)."""
        if state not in STATUS_STATES:
            raise ValueError(f"status state must be one of {sorted(STATUS_STATES)}, got {state!r}")
        with self._lock:
            r = self._repo(repo)
            st = CommitStatus(next(self._ids), repo, self._resolve(r, sha), state, context, description, now_iso())
            self.statuses.append(st)
            return st.id

    # -- control: webhooks -----------------------------------------------------------

    def ping(self, repo: str) -> str:
        with self._lock:
            r = self._repo(repo)
            payload = {"zen": "Keep it logically awesome.", "hook_id": self.hook_id,
                       "hook": P.hook(self.url, r, self.hook_id, self._webhook_url, self._created_at)}
        return self._emit("ping", r, payload, r.owner).id

    def pull_json(self, repo: str, number: int) -> dict[str, Any]:
        with self._lock:
            return self._pull_json(self._pull(repo, number))

    # -- model helpers -------------------------------------------------------------

    def _new_commit(self, parent: str | None, tree: dict[str, str], message: str, author: str) -> Commit:
        stamp = now_iso()
        seed = json.dumps([parent, tree, message, author, stamp, next(self._ids)], sort_keys=True)
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, tree, message, author, stamp)
        self.commits[commit.sha] = commit
        return commit

    def _repo(self, full_name: str) -> Repo:
        repo = self.repos.get(full_name)
        if repo is None:
            raise KeyError(f"no repository {full_name!r}")
        return repo

    def _pull(self, repo: str, number: int) -> Pull:
        pr = self.pulls.get((repo, int(number)))
        if pr is None:
            raise KeyError(f"no pull request {repo}#{number}")
        return pr

    def _resolve(self, repo: Repo, ref: str) -> str:
        """A branch name or a (possibly abbreviated) commit SHA -> full SHA."""
        if ref in repo.branches:
            return repo.branches[ref]
        matches = [sha for sha in self.commits if sha.startswith(ref)] if len(ref) >= 7 else []
        if len(matches) != 1:
            raise KeyError(f"no commit {ref!r} in {repo.full_name}")
        return matches[0]

    def _pulls_at(self, repo: str, sha: str) -> list[Pull]:
        return [p for p in self.pulls.values() if p.repo == repo and p.head_sha == sha and p.state == "open"]

    def _files(self, pr: Pull) -> list[dict[str, Any]]:
        r = self.repos[pr.repo]
        changes = file_changes(self.commits[pr.base_sha].tree, self.commits[pr.head_sha].tree)
        return [P.pull_file(self.url, r, pr, c) for c in changes]

    def _commit_count(self, pr: Pull) -> int:
        count, sha = 0, pr.head_sha
        while sha and sha != pr.base_sha and count < 10000:
            count += 1
            sha = self.commits[sha].parent or ""
        return count

    def _pull_json(self, pr: Pull) -> dict[str, Any]:
        return P.pull_request(self.url, self.repos[pr.repo], pr, files=self._files(pr), commits=self._commit_count(pr))

    def _emit_pull(self, pr: Pull, action: str, actor: str, *, extra: dict[str, Any] | None = None) -> None:
        with self._lock:
            payload = {"action": action, "number": pr.number, **(extra or {}), "pull_request": self._pull_json(pr)}
            r = self.repos[pr.repo]
        self._emit("pull_request", r, payload, actor)

    def _emit(self, event: str, repo: Repo, payload: dict[str, Any], actor: str) -> Delivery:
        body = dict(payload)
        body["repository"] = P.repository(self.url, repo)
        body["sender"] = P.user(self.url, actor)
        if self.installation_id is not None:
            body["installation"] = {"id": self.installation_id, "node_id": P.node_id("MDIz", self.installation_id)}
        return self._sender().send(event, body)

    def _webhook_headers(self, event: str, delivery_id: str, body: bytes) -> dict[str, str]:
        key = self.webhook_secret.encode()
        return {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/foundry",
            "X-GitHub-Delivery": delivery_id,
            "X-GitHub-Event": event,
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        }

    # -- REST --------------------------------------------------------------------

    def _route(self, operation: str, handler: Callable[[web.Request, Repo], Any]) -> Callable[..., Any]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization", "")
            if not auth:
                return self._json({"message": "Requires authentication", "status": "401"}, status=401)
            if auth not in (f"Bearer {self.token}", f"token {self.token}"):
                return self._json({"message": "Bad credentials", "status": "401"}, status=401)
            fault = self.faults.take(operation)
            if fault is not None:
                if fault.kind == "hang":
                    await asyncio.sleep(fault.seconds or 30)
                elif fault.kind in ("error", "apply_then_error"):
                    return self._json({"message": "Server Error"}, status=500)
                elif fault.kind == "ratelimit":
                    return self._primary_limited(fault.seconds)
                elif fault.kind == "ratelimit_secondary":
                    return self._json({"message": "You have exceeded a secondary rate limit. Please wait a few "
                                       "minutes before you try again."}, status=403,
                                      extra={"retry-after": str(int(fault.seconds))})
            with self._lock:
                repo = self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")
                if repo is None:
                    return self._json({"message": "Not Found", "status": "404"}, status=404)
                try:
                    result = handler(request, repo)
                except KeyError:
                    return self._json({"message": "Not Found", "status": "404"}, status=404)
                except ValueError as err:
                    return self._json({"message": str(err), "status": "422"}, status=422)
            return self._answer(request, result)

        return wrapped

    def _answer(self, request: web.Request, result: Any) -> web.Response:
        """200 with an ETag, 304 when If-None-Match matches (and then, like GitHub, no rate limit spent)."""
        if isinstance(result, tuple):
            body, link = result
        else:
            body, link = result, None
        raw = json.dumps(body).encode()
        etag = f'W/"{hashlib.sha256(raw).hexdigest()}"'
        extra = {"ETag": etag}
        if link:
            extra["Link"] = link
        if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
            return web.Response(status=304, headers={**self._rate_headers(spend=False), **extra})
        return web.Response(body=raw, status=200, content_type="application/json",
                            headers={**self._rate_headers(spend=True), **extra})

    def _rate_headers(self, *, spend: bool) -> dict[str, str]:
        with self._lock:
            if spend and self.rate_remaining > 0:
                self.rate_remaining -= 1
            return {"x-ratelimit-limit": str(RATE_LIMIT), "x-ratelimit-remaining": str(self.rate_remaining),
                    "x-ratelimit-used": str(RATE_LIMIT - self.rate_remaining),
                    "x-ratelimit-reset": str(self.rate_reset), "x-ratelimit-resource": "core",
                    "x-github-request-id": uuid.uuid4().hex[:20].upper()}

    def _primary_limited(self, seconds: float) -> web.Response:
        reset = int(time.time() + seconds)
        headers = {"x-ratelimit-limit": str(RATE_LIMIT), "x-ratelimit-remaining": "0",
                   "x-ratelimit-used": str(RATE_LIMIT), "x-ratelimit-reset": str(reset),
                   "x-ratelimit-resource": "core"}
        return self._json({"message": "API rate limit exceeded for user ID 1.",
                           "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"},
                          status=403, extra=headers)

    @staticmethod
    def _json(body: Any, *, status: int, extra: dict[str, str] | None = None) -> web.Response:
        return web.json_response(body, status=status, headers=extra)

    def _paginate(self, request: web.Request, items: list[Any]) -> tuple[list[Any], str | None]:
        try:
            per_page = int(request.query.get("per_page", "30"))
            page = int(request.query.get("page", "1"))
        except ValueError:
            raise ValueError("per_page and page must be integers") from None
        per_page = max(1, min(per_page, 100))  # GitHub caps per_page at 100
        page = max(1, page)
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]

        def url(p: int) -> str:
            query = dict(request.query, page=str(p), per_page=str(per_page))
            return f"{self.url}{request.path}?{urlencode(query)}"

        links = []
        if page < last:
            links += [f'<{url(page + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        if page > 1:
            links += [f'<{url(page - 1)}>; rel="prev"', f'<{url(1)}>; rel="first"']
        return chunk, ", ".join(links) or None

    def _get_pull(self, request: web.Request, repo: Repo) -> dict[str, Any]:
        return self._pull_json(self._pull(repo.full_name, int(request.match_info["number"])))

    def _list_pulls(self, request: web.Request, repo: Repo) -> tuple[list[Any], str | None]:
        state = request.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise ValueError("state must be open, closed or all")
        head = request.query.get("head")
        pulls = sorted((p for p in self.pulls.values() if p.repo == repo.full_name), key=lambda p: -p.number)
        if state != "all":
            pulls = [p for p in pulls if p.state == state]
        if head:
            owner, _, branch = head.partition(":")
            # GitHub filters by "user:ref-name"; the stand-in has no forks, so the owner must be the repo's.
            pulls = [p for p in pulls if owner == repo.owner and p.head_ref == branch]
        chunk, link = self._paginate(request, pulls)
        return [self._pull_json(p) for p in chunk], link

    def _list_files(self, request: web.Request, repo: Repo) -> tuple[list[Any], str | None]:
        pr = self._pull(repo.full_name, int(request.match_info["number"]))
        return self._paginate(request, self._files(pr))

    def _list_reviews(self, request: web.Request, repo: Repo) -> tuple[list[Any], str | None]:
        number = int(request.match_info["number"])
        self._pull(repo.full_name, number)
        reviews = [P.review(self.url, repo, rv, webhook=False)
                   for rv in self.reviews if rv.repo == repo.full_name and rv.number == number]
        return self._paginate(request, reviews)

    def _list_check_runs(self, request: web.Request, repo: Repo) -> tuple[dict[str, Any], str | None]:
        sha = self._resolve(repo, request.match_info["ref"])
        runs = [c for c in self.check_runs if c.repo == repo.full_name and c.head_sha == sha]
        pulls = self._pulls_at(repo.full_name, sha)
        chunk, link = self._paginate(request, runs)
        return {"total_count": len(runs), "check_runs": [P.check_run(self.url, repo, c, None, pulls) for c in chunk]}, link

    def _status(self, request: web.Request, repo: Repo) -> dict[str, Any]:
        sha = self._resolve(repo, request.match_info["ref"])
        statuses = [s for s in self.statuses if s.repo == repo.full_name and s.sha == sha]
        return P.combined_status(self.url, repo, sha, statuses)
