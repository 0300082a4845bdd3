"""The local GitHub's git side: `<server>/<owner>/<repo>.git` over smart HTTP.

Authentication is GitHub's: HTTP Basic with the token as the password (user
`x-access-token` for an installation token). Answers for refused requests are
the ones git users meet on GitHub:
- no or a bad/expired token: 401 with a Basic challenge (git then asks its
  credential helper, or fails with "Authentication failed");
- a token that cannot see the repository: 404 "Repository not found." (GitHub
  does not reveal that a private repository exists);
- a push with a token lacking `contents: write`: 403 "Permission to <repo>.git
  denied to <login>.".

After a push the model is brought in line with the bare repository before the
client's request ends, so when `git push` returns, the branch, the PR heads and
the webhooks (`push`, `pull_request` `synchronize`) already reflect it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from foundry.dev import github_payloads as P
from foundry.dev.git_http import run_backend, service_of
from foundry.dev.git_store import PROTECTED_ENV, PUSH_LOG_ENV, LoggedUpdate, read_push_log
from foundry.dev.github_auth import AccessToken, AuthError
from foundry.dev.github_model import RefUpdate, now_iso

if TYPE_CHECKING:
    from foundry.dev.github_server import GitHubServer

ANONYMOUS = "anonymous"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="GitHub"'}


def basic_password(header: str) -> str | None:
    """The password of an HTTP Basic Authorization header (None if absent or malformed)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def _text(status: int, message: str, extra: dict[str, str] | None = None) -> web.Response:
    # git shows a text/plain error body to the user, each line prefixed with "remote: ".
    return web.Response(status=status, text=message + "\n", content_type="text/plain", headers=extra)


class GitSide:
    """Mixed into GitHubServer."""

    def git_routes(self: "GitHubServer") -> list[web.RouteDef]:
        pattern = "/{owner}/{name}/{path:info/refs|git-upload-pack|git-receive-pack}"
        return [web.get(pattern, self._git), web.post(pattern, self._git)]

    def git_url(self: "GitHubServer", repo: str) -> str:
        """The clone URL of `repo` ("owner/name") on this server."""
        self._repo(repo)
        return P.git_url(self.url, repo)

    def _git_token(self: "GitHubServer", request: web.Request) -> AccessToken | None:
        """The token of a git request; None for an anonymous request (allowed without require_auth)."""
        header = request.headers.get("Authorization", "")
        if not header:
            if self.require_auth:
                raise AuthError(401, "Authentication required: use a token as the password "
                                     "(user x-access-token).")
            return None
        password = basic_password(header)
        if password is None:
            raise AuthError(401, "Invalid username or token. Password authentication is not supported for Git "
                                 "operations.")
        try:
            return self.tokens.lookup(password)
        except AuthError:
            raise AuthError(401, "Invalid username or token. Password authentication is not supported for Git "
                                 "operations.") from None

    async def _git(self: "GitHubServer", request: web.Request) -> web.StreamResponse:
        owner, name, path = request.match_info["owner"], request.match_info["name"], request.match_info["path"]
        repo_name = f"{owner}/{name[:-4] if name.endswith('.git') else name}"
        service = service_of(path, request.query.get("service"))
        if service is None:
            return _text(403, "Only git's smart HTTP protocol is served here.")
        if (path == "info/refs") != (request.method == "GET"):
            return _text(405, f"{request.method} is not allowed on {path}")
        fault = self.faults.take(f"git/{service}")  # e.g. gh.faults.add("git/git-receive-pack", "error")
        if fault is not None:
            if fault.kind == "hang":
                await asyncio.sleep(fault.seconds or 30)
            else:
                return _text(500, "Internal Server Error (an injected fault)")
        try:
            token = self._git_token(request)
        except AuthError as err:
            return _text(err.status, err.message, CHALLENGE if err.status == 401 else None)
        with self._lock:
            repo = self.repos.get(repo_name)
            store = self.stores.get(repo_name)
        if repo is None or store is None or (token is not None and not token.can_see(repo_name)):
            return _text(404, "Repository not found.")
        login = token.login if token is not None else ANONYMOUS
        need = "write" if service == "git-receive-pack" else "read"
        if token is not None and not token.has("contents", need):
            verb = "Permission to" if need == "write" else "Read access to"
            return _text(403, f"{verb} {repo_name}.git denied to {login}.")
        extra: dict[str, str] = {}
        log_path: Path | None = None
        if service == "git-receive-pack" and path != "info/refs":
            fd, raw = tempfile.mkstemp(prefix="push-", suffix=".log", dir=self.git_root)
            os.close(fd)
            log_path = Path(raw)
            extra[PUSH_LOG_ENV] = str(log_path)
            extra[PROTECTED_ENV] = " ".join(f"refs/heads/{b}" for b in sorted(self.protected.get(repo_name, ())))

        async def settle(code: int) -> None:
            # Before the client's response ends: sync the model with what the push did.
            if log_path is not None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self._after_push, repo_name, log_path, login)

        response, code, stderr = await run_backend(
            request, project_root=self.git_root, path_info=f"/{repo_name}.git/{path}", remote_user=login,
            extra_env=extra, before_eof=settle)
        if code != 0:
            self.git_errors.append(f"{service} {repo_name}: exit {code}: {stderr.strip()}")
        return response

    # -- after a push ---------------------------------------------------------------

    def _after_push(self: "GitHubServer", repo_name: str, log_path: Path, login: str) -> None:
        try:
            logged = read_push_log(log_path)
        finally:
            log_path.unlink(missing_ok=True)
        events: list[tuple[str, Any, dict[str, Any]]] = []
        with self._lock:
            repo = self.repos[repo_name]
            stamp = now_iso()
            for u in logged:
                self.ref_updates.append(RefUpdate(repo_name, u.ref, u.old, u.new, u.forced, u.accepted, u.verdict,
                                                  login, "git", stamp))
            moved = self._sync_from_git(repo_name)
            for u in logged:
                if u.accepted:
                    events.append(("push", repo, self._push_payload(repo_name, u, login)))
            for branch, before, after in moved:
                if after is None:
                    continue
                for pr in [p for p in self.pulls.values()
                           if p.repo == repo_name and p.head_ref == branch and p.state == "open"]:
                    pr.head_sha = after
                    pr.updated_at = now_iso()
                    events.append(("pull_request", repo, {"action": "synchronize", "number": pr.number,
                                                          "before": before, "after": after,
                                                          "pull_request": self._pull_json(pr)}))
        for event, repo, payload in events:
            self._emit(event, repo, payload, login)

    def _push_payload(self: "GitHubServer", repo_name: str, u: LoggedUpdate, login: str) -> dict[str, Any]:
        store = self.stores[repo_name]
        commits = []
        if u.new != "0" * 40:
            repo = self.repos[repo_name]
            known = [u.old] if u.old != "0" * 40 else [
                sha for b, sha in repo.branches.items() if f"refs/heads/{b}" != u.ref]
            for sha in store.new_commits([u.new], known)[-20:]:  # GitHub lists at most 20
                commit = self.commits[sha]
                parent = store.flat_tree(commit.parent) if commit.parent else {}
                mine = store.flat_tree(sha)
                commits.append((commit, {
                    "added": sorted(set(mine) - set(parent)), "removed": sorted(set(parent) - set(mine)),
                    "modified": sorted(p for p in mine if p in parent and parent[p] != mine[p])}))
        return P.push(self.url, self.repos[repo_name], u.ref, u.old, u.new, forced=u.forced, pusher=login,
                      commits=commits)
