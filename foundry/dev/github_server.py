"""A local GitHub: the REST subset Foundry uses, real git over smart HTTP, tokens and
a GitHub App, a control API to play the agent and the humans, and webhooks signed
like GitHub's.

    with GitHubServer(webhook_url=bridge_url, webhook_secret="s", retry_scale=0.001) as gh:
        gh.add_repo("acme/api", files={"README.md": "hi\\n"})
        sha = gh.commit("acme/api", "foundry/acme-42-a1", {"app.py": "print(1)\\n"})
        number = gh.open_pr("acme/api", "foundry/acme-42-a1", "ACME-42: health endpoint")
        gh.set_check("acme/api", sha, "failure")
        client = GitHubClient(gh.token, base_url=gh.url)
        subprocess.run(["git", "clone", gh.git_url("acme/api")])

Every repository is a real bare git repository (git_store.py) under a directory
the server owns; control-API commits are real git commits, and pushes through
`git http-backend` update the model (github_git.py). Every ref update is kept in
`ref_updates`. Authentication: github_auth.py; the REST writes and the App's
token endpoint: github_rest.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

from aiohttp import web

from foundry.dev import github_payloads as P
from foundry.dev.faults import Faults
from foundry.dev.git_objects import ZERO_SHA, Person
from foundry.dev.git_store import BareRepo, GitStoreError
from foundry.dev.github_auth import AccessToken, App, AuthError, Tokens, iso
from foundry.dev.github_git import GitSide, basic_password
from foundry.dev.github_model import (
    CheckRun, Commit, CommitStatus, IssueComment, Pull, RefUpdate, Repo, Review, ReviewComment, now_iso,
)
from foundry.dev.github_rest import BODY, TOKEN, Created, Invalid, RestWrites
from foundry.dev.server_thread import ServerThread, control_routes
from foundry.dev.webhook_sender import Delivery, WebhookControls, WebhookSender

CONTROLS = frozenset({"add_repo", "create_branch", "commit", "open_pr", "set_check", "set_status", "submit_review",
                      "comment", "merge", "close", "ping", "redeliver", "duplicate", "pull_json", "branch_sha",
                      "add_review_comment", "register_token", "expire_token", "revoke_token", "install_app",
                      "protect_branch", "ref_updates_json", "git_url", "files_at"})
ANNOTATION_LEVELS = frozenset({"notice", "warning", "failure"})
# What each REST operation needs of a token (permission, level).
NEEDS: Mapping[str, tuple[str, str]] = {
    "pulls/list": ("pull_requests", "read"), "pulls/get": ("pull_requests", "read"),
    "pulls/list-files": ("pull_requests", "read"), "pulls/list-reviews": ("pull_requests", "read"),
    "pulls/list-review-comments": ("pull_requests", "read"),
    "pulls/list-comments-for-review": ("pull_requests", "read"),
    "pulls/create": ("pull_requests", "write"), "pulls/update": ("pull_requests", "write"),
    "checks/list-for-ref": ("checks", "read"), "checks/get": ("checks", "read"),
    "checks/list-annotations": ("checks", "read"), "repos/get-combined-status-for-ref": ("statuses", "read"),
}
REVIEW_STATES = frozenset({"APPROVED", "CHANGES_REQUESTED", "COMMENTED"})
CONCLUSIONS = frozenset({"success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required"})
STATUS_STATES = frozenset({"error", "failure", "pending", "success"})
RATE_LIMIT = 5000


class GitHubServer(GitSide, RestWrites, ServerThread, WebhookControls):
    def __init__(
        self,
        *,
        token: str = "ghp_foundry_test_token",
        token_login: str = "foundry-agent",
        webhook_url: str | None = None,
        webhook_secret: str = "github-webhook-secret",
        retry_scale: float = 1.0,
        # GitHub does not retry a failed delivery by itself (a human or an app redelivers),
        # and gives a receiver 10 s; pass RETRY_DELAYS to exercise retries anyway.
        retry_delays: tuple[float, ...] = (),
        webhook_timeout: float = 10.0,
        installation_id: int | None = None,
        host: str = "127.0.0.1",
        require_auth: bool = False,
        token_lifetime: float = 3600.0,
        git_root: str | Path | None = None,
    ) -> None:
        """`token` is a static full-access token (acting as `token_login`), accepted on REST and
        git. `require_auth`: git refuses anonymous requests too (REST always wants a token).
        `host`: the address to bind and to put in URLs (a node IP lets pods reach it).
        `token_lifetime`: seconds an installation token lives (GitHub: one hour).
        `git_root`: where the bare repositories live (default: a temporary directory
        removed on stop())."""
        super().__init__()
        self.host = host
        self.token = token
        self.require_auth = require_auth
        self.token_lifetime = token_lifetime
        self.tokens = Tokens()
        self.tokens.register(token, login=token_login)
        self._own_root = git_root is None
        self.git_root = Path(git_root) if git_root is not None else Path(tempfile.mkdtemp(prefix="foundry-github-"))
        self.git_root.mkdir(parents=True, exist_ok=True)
        if self._own_root:
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.git_root), True)
        self.stores: dict[str, BareRepo] = {}
        self.ref_updates: list[RefUpdate] = []
        self.protected: dict[str, set[str]] = {}
        self.review_comments: list[ReviewComment] = []
        self.git_errors: list[str] = []
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
            web.get(f"{r}/commits/{{ref}}", self._route("repos/get-commit", self._get_commit)),
            web.get("/user", self._get_user),
            *self.rest_routes(),
            *control_routes(self, CONTROLS),
            *self.git_routes(),  # last: "/{owner}/{name}/..." must not shadow the API's paths
        ])
        return app

    def stop(self) -> None:
        super().stop()
        if self._own_root:
            self._cleanup()

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
            self.stores[full_name] = BareRepo.create(self.git_root / owner / f"{name}.git", default_branch)
            root = self._new_commit(full_name, (), dict(files or {"README.md": f"# {name}\n"}), "Initial commit", owner)
            self.repos[full_name] = repo
            self._move_branch(full_name, default_branch, root.sha, owner)
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
            self._move_branch(repo, branch, r.branches[source], "control")
            return r.branches[branch]

    def commit(self, repo: str, branch: str, files: dict[str, str | None], message: str = "Update files",
               *, author: str = "foundry-agent") -> str:
        """Push one commit to `branch` (created from the default branch if new). A file
        mapped to None is deleted. Pushing to a PR's head sends `synchronize`."""
        with self._lock:
            r = self._repo(repo)
            parent = self.commits[r.branches.get(branch, r.branches[r.default_branch])]
            new = self._new_commit(repo, (parent.sha,), files, message, author)
            self._move_branch(repo, branch, new.sha, author)
            touched = [p for p in self.pulls.values() if p.repo == repo and p.head_ref == branch and p.state == "open"]
            for pr in touched:
                pr.head_sha = new.sha
                pr.updated_at = now_iso()
        for pr in touched:
            self._emit_pull(pr, "synchronize", author, extra={"before": parent.sha, "after": new.sha})
        return new.sha

    def files_at(self, repo: str, ref: str) -> dict[str, str]:
        """The files (path -> content) at a branch or commit."""
        with self._lock:
            return dict(self.commits[self._resolve(self._repo(repo), ref)].tree)

    def protect_branch(self, repo: str, branch: str) -> None:
        """Refuse every push to `branch` (GitHub's branch protection: changes only through PRs)."""
        with self._lock:
            self._repo(repo)
            self.protected.setdefault(repo, set()).add(branch)

    def ref_updates_for(self, repo: str, ref: str | None = None) -> list[RefUpdate]:
        """Every ref update asked for on `repo` (optionally one ref: "refs/heads/main" or "main")."""
        full = None if ref is None else ref if ref.startswith("refs/") else f"refs/heads/{ref}"
        with self._lock:
            return [u for u in self.ref_updates if u.repo == repo and (full is None or u.ref == full)]

    def ref_updates_json(self, repo: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [u.as_dict() for u in self.ref_updates if repo is None or u.repo == repo]

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
            pr = self._new_pull(r, head, base, title, body, user, draft)
        self._emit_pull(pr, "opened", user)
        return pr.number

    def _new_pull(self, r: Repo, head: str, base: str, title: str, body: str, user: str, draft: bool) -> Pull:
        with self._lock:
            number = self._next_number[r.full_name]
            self._next_number[r.full_name] += 1
            stamp = now_iso()
            pr = Pull(next(self._ids), number, r.full_name, title, body, user, head, r.branches[head], base,
                      r.branches[base], draft, stamp, stamp)
            self.pulls[(r.full_name, number)] = pr
            return pr

    def merge(self, repo: str, number: int, *, user: str = "octocat", method: str = "squash") -> str:
        """Merge the PR into its base, taking the head's files (no three-way merge). `method`
        is GitHub's: "squash" (one new commit on the base: the branch's commits stay off it,
        the stand-in's behaviour before it had git) or "merge" (a commit with both parents)."""
        if method not in ("squash", "merge"):
            raise ValueError(f"merge method must be squash or merge, got {method!r}")
        with self._lock:
            pr = self._pull(repo, number)
            if pr.state != "open":
                raise ValueError(f"{repo}#{number} is not open")
            r = self._repo(repo)
            if method == "merge":
                parents = (r.branches[pr.base_ref], pr.head_sha)
                message = f"Merge pull request #{number} from {r.owner}/{pr.head_ref}\n\n{pr.title}"
            else:
                parents = (r.branches[pr.base_ref],)
                message = f"{pr.title} (#{number})"
            merge = self._new_commit(repo, parents, {}, message, user, base=pr.head_sha)
            self._move_branch(repo, pr.base_ref, merge.sha, user)
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

    def submit_review(self, repo: str, number: int, user: str, state: str, body: str = "",
                      *, comments: list[dict[str, Any]] | None = None) -> int:
        """Submit a review; `comments` ([{"path", "line", "body"}, ...]) become its review comments."""
        state = state.upper()
        if state not in REVIEW_STATES:
            raise ValueError(f"review state must be one of {sorted(REVIEW_STATES)}, got {state!r}")
        with self._lock:
            pr = self._pull(repo, number)
            rv = Review(next(self._ids), repo, number, user, state, body, pr.head_sha, now_iso())
            self.reviews.append(rv)
            added = [self._add_review_comment(pr, user, c, rv.id) for c in comments or []]
            r = self._repo(repo)
            payload = {"action": "submitted", "review": P.review(self.url, r, rv, webhook=True),
                       "pull_request": P.pull_request(self.url, r, pr, files=self._files(pr),
                                                      commits=self._commit_count(pr), simple=True)}
            notes = [self._review_comment_payload(r, pr, c) for c in added]
        for note in notes:  # GitHub sends one event per comment, then the review's
            self._emit("pull_request_review_comment", r, note, user)
        self._emit("pull_request_review", r, payload, user)
        return rv.id

    def add_review_comment(self, repo: str, number: int, user: str, path: str, line: int | None, body: str,
                           *, review_id: int | None = None, start_line: int | None = None,
                           side: str = "RIGHT", in_reply_to: int | None = None) -> int:
        """A comment on `path` at `line` of the PR's diff (line None: on the file)."""
        with self._lock:
            pr = self._pull(repo, number)
            if review_id is not None and not any(r.id == review_id for r in self.reviews):
                raise KeyError(f"no review {review_id}")
            spec = {"path": path, "line": line, "body": body, "start_line": start_line, "side": side,
                    "in_reply_to": in_reply_to}
            c = self._add_review_comment(pr, user, spec, review_id)
            r = self._repo(repo)
            note = self._review_comment_payload(r, pr, c)
        self._emit("pull_request_review_comment", r, note, user)
        return c.id

    def _review_comment_payload(self, r: Repo, pr: Pull, c: ReviewComment) -> dict[str, Any]:
        return {"action": "created", "comment": self._review_comment_json(r, pr, c),
                "pull_request": P.pull_request(self.url, r, pr, files=self._files(pr),
                                               commits=self._commit_count(pr), simple=True)}

    def _add_review_comment(self, pr: Pull, user: str, spec: Mapping[str, Any], review_id: int | None) -> ReviewComment:
        path, body, line = spec.get("path"), spec.get("body"), spec.get("line")
        if not isinstance(path, str) or not path or not isinstance(body, str) or not body:
            raise ValueError("a review comment needs a path and a body")
        if line is not None and (not isinstance(line, int) or line < 1):
            raise ValueError(f"line must be a positive integer, got {line!r}")
        if spec.get("side", "RIGHT") not in ("LEFT", "RIGHT"):
            raise ValueError("side must be LEFT or RIGHT")
        c = ReviewComment(next(self._ids), pr.repo, pr.number, review_id, user, path, line,
                          spec.get("side") or "RIGHT", spec.get("start_line"), body, pr.head_sha, now_iso(),
                          spec.get("in_reply_to"))
        self.review_comments.append(c)
        pr.review_comments += 1
        return c

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
                  status: str = "completed", output: Mapping[str, str | None] | None = None,
                  annotations: list[dict[str, Any]] | None = None) -> int:
        """Create or update check run `name` on `sha`. Completing it sends `check_run`
        `completed`, and `check_suite` `completed` once every run of the suite is done.
        `output`: {"title", "summary", "text"}; `annotations`: GitHub's annotation objects
        (path, start_line, end_line, annotation_level, message, optional title, raw_details),
        added to the run's (GitHub appends them too)."""
        notes = [_annotation(a) for a in annotations or []]
        if output is not None:
            unknown = set(output) - {"title", "summary", "text"}
            if unknown:
                raise ValueError(f"check output takes title, summary and text, not {sorted(unknown)}")
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
            if output is not None:
                run.output = {k: output.get(k) for k in ("title", "summary", "text")}
            run.annotations.extend(notes)
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

    # -- control: tokens and the App ----------------------------------------------------

    def register_token(self, token: str, *, login: str = "octocat", repositories: list[str] | None = None,
                       permissions: Mapping[str, str] | None = None, expires_in: float | None = None) -> str:
        """A static token (like a personal access token): `repositories` (full names) and
        `permissions` limit it (default: every repository, full access); `expires_in` seconds."""
        self.tokens.register(token, login=login, repositories=repositories, permissions=permissions,
                             expires_in=expires_in)
        return token

    def expire_token(self, token: str) -> None:
        self.tokens.expire(token)

    def revoke_token(self, token: str) -> None:
        self.tokens.revoke(token)

    def install_app(self, *, app_id: int, public_key_pem: str, installation_id: int, slug: str = "foundry",
                    permissions: Mapping[str, str] | None = None, account: str | None = None,
                    repositories: list[str] | None = None, client_id: str = "") -> dict[str, Any]:
        """Register a GitHub App and its one installation. `permissions` default to what Foundry
        asks for (contents/pull_requests write, checks/statuses read); `account` limits the
        installation to one owner's repositories, `repositories` (full names) to some of them."""
        perms = dict(permissions) if permissions is not None else {
            "contents": "write", "pull_requests": "write", "checks": "read", "statuses": "read", "metadata": "read"}
        app = self.tokens.add_app(App(app_id, slug, public_key_pem, installation_id, perms, account,
                                      frozenset(repositories) if repositories is not None else None, client_id))
        if self.installation_id is None:
            self.installation_id = installation_id  # webhooks now carry the installation, like an App's do
        return {"app_id": app.app_id, "installation_id": app.installation_id, "slug": app.slug,
                "bot_login": app.bot_login, "permissions": app.permissions}

    def token_info(self, token: str) -> AccessToken | None:
        """What the stand-in knows of a token (minted or registered), expired or not."""
        return self.tokens.get(token)

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

    def _new_commit(self, repo: str, parents: tuple[str, ...], changes: Mapping[str, str | None], message: str,
                    author: str, *, base: str | None = None) -> Commit:
        """A real git commit in `repo`'s store: `base`'s files (default: the first parent's)
        with `changes` applied (None deletes a file)."""
        epoch = int(time.time())
        person = Person(author, f"{author}@users.noreply.github.com", epoch)
        sha, tree_id, _ = self.stores[repo].write_commit(parents, dict(changes), message, person, base=base)
        start = base if base is not None else (parents[0] if parents else None)
        files = dict(self.commits[start].tree) if start else {}
        for path, content in changes.items():
            if content is None:
                files.pop(path, None)
            else:
                files[path] = content
        commit = Commit(sha, parents[0] if parents else None, files, message, author, iso(epoch), tree_id, parents)
        self.commits[sha] = commit
        return commit

    def _move_branch(self, repo: str, branch: str, sha: str, actor: str) -> None:
        """Point `branch` at `sha` in the bare repository and the model (control API)."""
        r = self.repos[repo]
        old = r.branches.get(branch)
        try:
            self.stores[repo].update_ref(f"refs/heads/{branch}", sha, old)
        except GitStoreError as err:
            raise ValueError(str(err)) from None
        r.branches[branch] = sha
        forced = old is not None and not self._descends(sha, old)
        self.ref_updates.append(RefUpdate(repo, f"refs/heads/{branch}", old or ZERO_SHA, sha, forced, True,
                                          "accepted", actor, "control", now_iso()))

    def _descends(self, sha: str, ancestor: str) -> bool:
        """Whether `ancestor` is reachable from `sha` through commits the model knows."""
        seen, todo = set(), [sha]
        while todo:
            current = todo.pop()
            if current == ancestor:
                return True
            if current in seen or current not in self.commits:
                continue
            seen.add(current)
            todo.extend(self.commits[current].parents or ((self.commits[current].parent,)
                                                         if self.commits[current].parent else ()))
        return False

    def _sync_from_git(self, repo: str) -> list[tuple[str, str | None, str | None]]:
        """Bring the model's branches and commits in line with the bare repository (after a
        push); (branch, before, after) for every branch that moved (after None: deleted)."""
        r = self.repos[repo]
        store = self.stores[repo]
        heads = {ref[len("refs/heads/"):]: sha for ref, sha in store.refs().items()}
        moved: list[tuple[str, str | None, str | None]] = [
            (b, r.branches.get(b), sha) for b, sha in heads.items() if r.branches.get(b) != sha]
        moved += [(b, sha, None) for b, sha in r.branches.items() if b not in heads]
        fresh = [sha for sha in store.new_commits([a for _, _, a in moved if a], sorted(set(r.branches.values())))
                 if sha not in self.commits]
        for loaded in store.load(fresh):
            h = loaded.header
            self.commits[loaded.sha] = Commit(loaded.sha, h.parents[0] if h.parents else None, loaded.files,
                                              h.message, h.author_name, iso(h.epoch), h.tree, h.parents)
        for branch, _, after in moved:
            if after is None:
                del r.branches[branch]
            else:
                r.branches[branch] = after
        return moved

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
        changes = self.stores[pr.repo].diff(pr.base_sha, pr.head_sha)
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
        body.setdefault("repository", P.repository(self.url, repo))  # a push brings its own (epoch times)
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
            try:
                token = self.tokens.lookup(_rest_token(auth))
            except AuthError as err:
                return self._json({"message": err.message, "status": "401",
                                   "documentation_url": "https://docs.github.com/rest"}, status=401)
            full_name = f"{request.match_info['owner']}/{request.match_info['repo']}"
            if not token.can_see(full_name):
                return self._json({"message": "Not Found", "status": "404"}, status=404)
            permission, level = NEEDS.get(operation, ("metadata", "read"))
            if not token.has(permission, level):
                who = "integration" if token.kind == "installation" else "personal access token"
                return self._json({"message": f"Resource not accessible by {who}", "status": "403"}, status=403)
            request[TOKEN] = token
            if request.method in ("POST", "PATCH"):
                try:
                    request[BODY] = await request.json()
                except ValueError:
                    return self._json({"message": "Problems parsing JSON", "status": "400"}, status=400)
                if not isinstance(request[BODY], dict):
                    return self._json({"message": "Problems parsing JSON", "status": "400"}, status=400)
            fault = self.faults.take(operation)
            if fault is not None:
                if fault.kind == "hang":
                    await asyncio.sleep(fault.seconds or 30)
                elif fault.kind == "error":
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
                except Invalid as err:
                    return self._json(err.body, status=422)
                except ValueError as err:
                    return self._json({"message": str(err), "status": "422"}, status=422)
            if fault is not None and fault.kind == "apply_then_error":
                return self._json({"message": "Server Error"}, status=500)
            if isinstance(result, Created):
                return web.Response(body=json.dumps(result.body).encode(), status=201, content_type="application/json",
                                    headers=self._rate_headers(spend=True))
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

    def _get_commit(self, request: web.Request, repo: Repo) -> dict[str, Any]:
        c = self.commits[self._resolve(repo, request.match_info["ref"])]
        person = {"name": c.author, "email": f"{c.author.lower().replace(' ', '-')}@users.noreply.github.com",
                  "date": c.at}
        api = f"{self.url}/repos/{repo.full_name}/commits/{c.sha}"
        # `author` is the GitHub user the commit's email belongs to; the stand-in knows none (null).
        return {"sha": c.sha, "node_id": P.node_id("C", int(c.sha[:8], 16)), "url": api, "author": None,
                "committer": None, "html_url": f"https://github.com/{repo.full_name}/commit/{c.sha}",
                "commit": {"author": person, "committer": person, "message": c.message,
                           "tree": {"sha": c.tree_sha}, "url": api},
                "parents": [{"sha": p} for p in (c.parents or ((c.parent,) if c.parent else ()))]}

    async def _get_user(self, request: web.Request) -> web.Response:
        """The token's user; an installation token has none (GitHub: 403 for an integration)."""
        try:
            token = self.tokens.lookup(_rest_token(request.headers.get("Authorization", "")))
        except AuthError as err:
            return self._json({"message": err.message, "status": "401"}, status=401)
        if token.kind == "installation":
            return self._json({"message": "Resource not accessible by integration", "status": "403"}, status=403)
        return self._json(P.user(self.url, token.login), status=200)

    def _status(self, request: web.Request, repo: Repo) -> dict[str, Any]:
        sha = self._resolve(repo, request.match_info["ref"])
        statuses = [s for s in self.statuses if s.repo == repo.full_name and s.sha == sha]
        return P.combined_status(self.url, repo, sha, statuses)


def _rest_token(header: str) -> str:
    """The token of a REST Authorization header: "Bearer X", "token X" or Basic with X as password."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token"):
        return value.strip()
    return basic_password(header) or ""


def _annotation(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one check-run annotation the way GitHub's API does."""
    for key in ("path", "start_line", "annotation_level", "message"):
        if raw.get(key) in (None, ""):
            raise ValueError(f"an annotation needs {key}")
    if raw["annotation_level"] not in ANNOTATION_LEVELS:
        raise ValueError(f"annotation_level must be one of {sorted(ANNOTATION_LEVELS)}, got {raw['annotation_level']!r}")
    note = {k: raw.get(k) for k in ("path", "start_line", "end_line", "start_column", "end_column",
                                     "annotation_level", "title", "message", "raw_details")}
    if note["end_line"] is None:
        note["end_line"] = note["start_line"]
    return note
