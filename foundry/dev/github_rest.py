"""The local GitHub's REST endpoints beyond the read-only core: opening and editing
pull requests, check-run details and annotations, review comments, and the App's
installation-token endpoint. Mixed into GitHubServer; handlers run under its lock.

Validation answers follow GitHub: 422 "Validation Failed" with an `errors` list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from foundry.dev import github_payloads as P
from foundry.dev.github_auth import AuthError, iso
from foundry.dev.github_model import Pull, Repo, diff_hunk, now_iso

if TYPE_CHECKING:
    from foundry.dev.github_server import GitHubServer


# Per-request storage of the acting token and the parsed JSON body (typed keys where aiohttp has them).
TOKEN: Any = web.RequestKey("token", object) if hasattr(web, "RequestKey") else "token"
BODY: Any = web.RequestKey("json", object) if hasattr(web, "RequestKey") else "json"


class Invalid(ValueError):
    """A 422 with GitHub's body: message plus a list of errors."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.body = {"message": message, "errors": errors or [],
                     "documentation_url": "https://docs.github.com/rest", "status": "422"}


class Created:
    """A handler's answer that is 201, not 200."""

    def __init__(self, body: Any) -> None:
        self.body = body


def _missing(field: str) -> Invalid:
    return Invalid("Validation Failed", [{"resource": "PullRequest", "field": field, "code": "missing_field"}])


class RestWrites:
    def rest_routes(self: "GitHubServer") -> list[web.RouteDef]:
        r = "/repos/{owner}/{repo}"
        n = "{number:\\d+}"
        return [
            web.post(f"{r}/pulls", self._route("pulls/create", self._create_pull)),
            web.patch(f"{r}/pulls/{n}", self._route("pulls/update", self._update_pull)),
            web.get(f"{r}/pulls/{n}/comments", self._route("pulls/list-review-comments", self._list_review_comments)),
            web.get(f"{r}/pulls/{n}/reviews/{{review:\\d+}}/comments",
                    self._route("pulls/list-comments-for-review", self._list_comments_for_review)),
            web.get(f"{r}/check-runs/{{id:\\d+}}", self._route("checks/get", self._get_check_run)),
            web.get(f"{r}/check-runs/{{id:\\d+}}/annotations",
                    self._route("checks/list-annotations", self._list_annotations)),
            web.post("/app/installations/{installation:\\d+}/access_tokens", self._access_tokens),
            web.get("/app", self._get_app),
        ]

    # -- pull requests ---------------------------------------------------------------

    def _create_pull(self: "GitHubServer", request: web.Request, repo: Repo) -> Created:
        body = request[BODY]
        for key in ("title", "head", "base"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise _missing(key)
        head = body["head"]
        if ":" in head:
            owner, _, head = head.partition(":")
            if owner != repo.owner:  # no forks on the stand-in
                raise Invalid("Validation Failed", [{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        base = body["base"]
        if head not in repo.branches:
            raise Invalid("Validation Failed", [{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        if base not in repo.branches:
            raise Invalid("Validation Failed", [{"resource": "PullRequest", "field": "base", "code": "invalid"}])
        if any(p.repo == repo.full_name and p.head_ref == head and p.state == "open" for p in self.pulls.values()):
            raise Invalid("Validation Failed", [{"resource": "PullRequest", "code": "custom",
                                                 "message": f"A pull request already exists for {repo.owner}:{head}."}])
        if self._descends(repo.branches[base], repo.branches[head]):  # head is already in base
            raise Invalid("Validation Failed", [{"resource": "PullRequest", "code": "custom",
                                                 "message": f"No commits between {base} and {head}"}])
        draft = body.get("draft", False)
        if not isinstance(draft, bool):
            raise Invalid("Validation Failed", [{"resource": "PullRequest", "field": "draft", "code": "invalid"}])
        pr = self._new_pull(repo, head, base, body["title"], body.get("body") or "", request[TOKEN].login, draft)
        self._emit_pull(pr, "opened", pr.user)
        return Created(self._pull_json(pr))

    def _update_pull(self: "GitHubServer", request: web.Request, repo: Repo) -> dict[str, Any]:
        body = request[BODY]
        pr = self._pull(repo.full_name, int(request.match_info["number"]))
        actor = request[TOKEN].login
        changes: dict[str, Any] = {}
        for key in ("title", "body"):
            if key in body:
                if body[key] is not None and not isinstance(body[key], str):
                    raise Invalid("Validation Failed", [{"resource": "PullRequest", "field": key, "code": "invalid"}])
                value = body[key] or ""
                if key == "title" and not value:
                    raise _missing("title")
                if getattr(pr, key) != value:
                    changes[key] = {"from": getattr(pr, key)}
                    setattr(pr, key, value)
        if "base" in body:
            if body["base"] not in repo.branches:
                raise Invalid("Validation Failed", [{"resource": "PullRequest", "field": "base", "code": "invalid"}])
            if body["base"] != pr.base_ref:
                changes["base"] = {"ref": {"from": pr.base_ref}, "sha": {"from": pr.base_sha}}
                pr.base_ref, pr.base_sha = body["base"], repo.branches[body["base"]]
        action = None
        state = body.get("state")
        if state is not None:
            if state not in ("open", "closed"):
                raise Invalid("Validation Failed", [{"resource": "PullRequest", "field": "state", "code": "invalid"}])
            if state == "closed" and pr.state == "open":
                pr.state, pr.closed_at, action = "closed", now_iso(), "closed"
            elif state == "open" and pr.state == "closed":
                if pr.merged:
                    raise Invalid("Validation Failed", [{"resource": "PullRequest", "code": "custom",
                                                         "message": "A merged pull request cannot be reopened"}])
                if any(p.repo == repo.full_name and p.head_ref == pr.head_ref and p.state == "open"
                       for p in self.pulls.values()):
                    raise Invalid("Validation Failed", [{"resource": "PullRequest", "code": "custom",
                                                         "message": f"A pull request already exists for "
                                                                    f"{repo.owner}:{pr.head_ref}."}])
                pr.state, pr.closed_at, action = "open", None, "reopened"
        if changes or action:
            pr.updated_at = now_iso()
        if changes:
            self._emit_pull(pr, "edited", actor, extra={"changes": changes})
        if action:
            self._emit_pull(pr, action, actor)
        return self._pull_json(pr)

    def _review_comment_json(self: "GitHubServer", repo: Repo, pr: Pull, c: Any) -> dict[str, Any]:
        patch = next((str(f.get("patch", "")) for f in self._files(pr) if f["filename"] == c.path), "")
        return P.review_comment(self.url, repo, c, diff_hunk(patch, c.line))

    def _list_review_comments(self: "GitHubServer", request: web.Request, repo: Repo) -> tuple[list[Any], str | None]:
        pr = self._pull(repo.full_name, int(request.match_info["number"]))
        comments = [c for c in self.review_comments if c.repo == repo.full_name and c.number == pr.number]
        chunk, link = self._paginate(request, comments)
        return [self._review_comment_json(repo, pr, c) for c in chunk], link

    def _list_comments_for_review(self: "GitHubServer", request: web.Request,
                                  repo: Repo) -> tuple[list[Any], str | None]:
        pr = self._pull(repo.full_name, int(request.match_info["number"]))
        review_id = int(request.match_info["review"])
        if not any(r.id == review_id and r.repo == repo.full_name and r.number == pr.number for r in self.reviews):
            raise KeyError(review_id)
        comments = [c for c in self.review_comments if c.review_id == review_id]
        chunk, link = self._paginate(request, comments)
        return [self._review_comment_json(repo, pr, c) for c in chunk], link

    # -- checks ---------------------------------------------------------------------

    def _check_run(self: "GitHubServer", repo: Repo, run_id: int) -> Any:
        run = next((c for c in self.check_runs if c.id == run_id and c.repo == repo.full_name), None)
        if run is None:
            raise KeyError(run_id)
        return run

    def _get_check_run(self: "GitHubServer", request: web.Request, repo: Repo) -> dict[str, Any]:
        run = self._check_run(repo, int(request.match_info["id"]))
        return P.check_run(self.url, repo, run, None, self._pulls_at(repo.full_name, run.head_sha))

    def _list_annotations(self: "GitHubServer", request: web.Request, repo: Repo) -> tuple[list[Any], str | None]:
        run = self._check_run(repo, int(request.match_info["id"]))
        chunk, link = self._paginate(request, run.annotations)
        return [P.annotation(self.url, repo, run, a) for a in chunk], link

    # -- the App --------------------------------------------------------------------

    def _jwt_app(self: "GitHubServer", request: web.Request) -> Any:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise AuthError(401, "A JSON web token could not be decoded: send it as 'Authorization: Bearer <JWT>'")
        return self.tokens.verify_jwt(value.strip())

    async def _get_app(self: "GitHubServer", request: web.Request) -> web.Response:
        try:
            app = self._jwt_app(request)
        except AuthError as err:
            return self._json({"message": err.message, "status": str(err.status)}, status=err.status)
        return self._json(P.app_record(self.url, app.app_id, app.slug, app.permissions, app.account), status=200)

    async def _access_tokens(self: "GitHubServer", request: web.Request) -> web.Response:
        fault = self.faults.take("apps/create-installation-access-token")
        if fault is not None and fault.kind in ("error", "apply_then_error"):
            return self._json({"message": "Server Error"}, status=500)
        try:
            app = self._jwt_app(request)
            if app.installation_id != int(request.match_info["installation"]):
                return self._json({"message": "Not Found", "status": "404"}, status=404)
            try:
                body = await request.json() if request.can_read_body else {}
            except ValueError:
                return self._json({"message": "Problems parsing JSON", "status": "400"}, status=400)
            if not isinstance(body, dict):
                return self._json({"message": "Problems parsing JSON", "status": "400"}, status=400)
            with self._lock:
                repos = self._installation_repos(app, body.get("repositories"), body.get("repository_ids"))
                permissions = body.get("permissions")
                if permissions is not None and not isinstance(permissions, dict):
                    raise AuthError(422, "permissions must be an object of permission name to level")
                token = self.tokens.mint(app, repositories=[r.full_name for r in repos] if repos is not None else None,
                                         permissions=permissions, lifetime=self.token_lifetime)
                listed = repos if repos is not None else [
                    r for r in self.repos.values() if token.can_see(r.full_name)
                    and (app.account is None or r.owner == app.account)]
                answer: dict[str, Any] = {
                    "token": token.token, "expires_at": iso(token.expires_at or 0), "permissions": token.permissions,
                    "repository_selection": "selected" if (repos is not None or app.repositories is not None) else "all",
                }
                if repos is not None:
                    answer["repositories"] = [P.repository(self.url, r) for r in listed]
        except AuthError as err:
            return self._json({"message": err.message, "status": str(err.status)}, status=err.status)
        return self._json(answer, status=201)

    def _installation_repos(self: "GitHubServer", app: Any, names: Any, ids: Any) -> list[Repo] | None:
        """The repositories a token request names (None: all the installation reaches)."""
        if names is None and ids is None:
            return None
        reach = [r for r in self.repos.values()
                 if (app.account is None or r.owner == app.account)
                 and (app.repositories is None or r.full_name in app.repositories)]
        chosen: list[Repo] = []
        for name in names or []:
            # GitHub wants bare names ("api"), not "owner/api"; a slash matches nothing.
            matches = [r for r in reach if isinstance(name, str) and r.name == name]
            if len(matches) != 1:
                raise AuthError(422, "There is at least one repository that does not exist or is not accessible "
                                     "to the parent installation.")
            chosen.append(matches[0])
        for repo_id in ids or []:
            match = next((r for r in reach if r.id == repo_id), None)
            if match is None:
                raise AuthError(422, "There is at least one repository that does not exist or is not accessible "
                                     "to the parent installation.")
            chosen.append(match)
        return list({r.full_name: r for r in chosen}.values())
