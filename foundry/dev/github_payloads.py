"""Render the local GitHub's state in GitHub's JSON shapes (REST answers and webhook bodies).

Field names and nesting follow GitHub's published examples; API URLs point at
the stand-in (`api`) so a client following them stays local.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any

from foundry.dev.github_model import (
    CheckRun, Commit, CommitStatus, IssueComment, Pull, Repo, Review, ReviewComment,
)

HTML = "https://github.com"
APP = {"id": 15368, "slug": "github-actions", "name": "GitHub Actions"}


def _id(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def node_id(kind: str, number: int) -> str:
    return f"{kind}_{number:x}"


def user(api: str, login: str) -> dict[str, Any]:
    uid = _id(f"user:{login}")
    bot = login.endswith("[bot]")
    return {
        "login": login, "id": uid, "node_id": node_id("U", uid),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
        "url": f"{api}/users/{login}", "html_url": f"{HTML}/{login}",
        "type": "Bot" if bot else "User", "site_admin": False,
    }


def repository(api: str, repo: Repo) -> dict[str, Any]:
    full = repo.full_name
    return {
        "id": repo.id, "node_id": node_id("R", repo.id), "name": repo.name, "full_name": full,
        "private": repo.private, "owner": user(api, repo.owner), "html_url": f"{HTML}/{full}",
        "description": None, "fork": False, "url": f"{api}/repos/{full}",
        "pulls_url": f"{api}/repos/{full}/pulls{{/number}}",
        "created_at": repo.created_at, "updated_at": repo.created_at, "pushed_at": repo.created_at,
        "clone_url": git_url(api, full), "default_branch": repo.default_branch,
        "visibility": "private" if repo.private else "public", "archived": False, "disabled": False,
    }


def git_url(api: str, full_name: str) -> str:
    """Where the stand-in serves the repository over git's smart HTTP."""
    return f"{api}/{full_name}.git"


def _ref(api: str, repo: Repo, ref: str, sha: str) -> dict[str, Any]:
    return {"label": f"{repo.owner}:{ref}", "ref": ref, "sha": sha, "user": user(api, repo.owner),
            "repo": repository(api, repo)}


# The "simple" pull request GitHub embeds in pull_request_review payloads lacks these.
_FULL_ONLY = ("merged", "mergeable", "rebaseable", "mergeable_state", "merged_by", "comments", "review_comments",
              "maintainer_can_modify", "commits", "additions", "deletions", "changed_files")


def pull_request(api: str, repo: Repo, pr: Pull, *, files: list[dict[str, Any]], commits: int,
                 simple: bool = False) -> dict[str, Any]:
    full_pr = _pull_request(api, repo, pr, files=files, commits=commits)
    if simple:
        for key in _FULL_ONLY:
            del full_pr[key]
    return full_pr


def _pull_request(api: str, repo: Repo, pr: Pull, *, files: list[dict[str, Any]], commits: int) -> dict[str, Any]:
    full, n = repo.full_name, pr.number
    links = {
        "self": {"href": f"{api}/repos/{full}/pulls/{n}"},
        "html": {"href": f"{HTML}/{full}/pull/{n}"},
        "issue": {"href": f"{api}/repos/{full}/issues/{n}"},
        "comments": {"href": f"{api}/repos/{full}/issues/{n}/comments"},
        "review_comments": {"href": f"{api}/repos/{full}/pulls/{n}/comments"},
        "review_comment": {"href": f"{api}/repos/{full}/pulls/comments{{/number}}"},
        "commits": {"href": f"{api}/repos/{full}/pulls/{n}/commits"},
        "statuses": {"href": f"{api}/repos/{full}/statuses/{pr.head_sha}"},
    }
    return {
        "url": f"{api}/repos/{full}/pulls/{n}", "id": pr.id, "node_id": node_id("PR", pr.id),
        "html_url": f"{HTML}/{full}/pull/{n}", "diff_url": f"{HTML}/{full}/pull/{n}.diff",
        "patch_url": f"{HTML}/{full}/pull/{n}.patch", "issue_url": f"{api}/repos/{full}/issues/{n}",
        "number": n, "state": pr.state, "locked": False, "title": pr.title, "user": user(api, pr.user),
        "body": pr.body or None, "created_at": pr.created_at, "updated_at": pr.updated_at,
        "closed_at": pr.closed_at, "merged_at": pr.merged_at, "merge_commit_sha": pr.merge_commit_sha,
        "assignee": None, "assignees": [], "requested_reviewers": [], "requested_teams": [], "labels": [],
        "milestone": None, "draft": pr.draft,
        "commits_url": f"{api}/repos/{full}/pulls/{n}/commits",
        "review_comments_url": f"{api}/repos/{full}/pulls/{n}/comments",
        "review_comment_url": f"{api}/repos/{full}/pulls/comments{{/number}}",
        "comments_url": f"{api}/repos/{full}/issues/{n}/comments",
        "statuses_url": f"{api}/repos/{full}/statuses/{pr.head_sha}",
        "head": _ref(api, repo, pr.head_ref, pr.head_sha), "base": _ref(api, repo, pr.base_ref, pr.base_sha),
        "_links": links, "author_association": "CONTRIBUTOR", "auto_merge": None, "active_lock_reason": None,
        "merged": pr.merged, "mergeable": None if pr.state == "closed" else True, "rebaseable": None,
        "mergeable_state": "unknown" if pr.state == "closed" else "clean",
        "merged_by": user(api, pr.merged_by) if pr.merged_by else None,
        "comments": pr.comments, "review_comments": pr.review_comments, "maintainer_can_modify": False,
        "commits": commits,
        "additions": sum(int(f["additions"]) for f in files), "deletions": sum(int(f["deletions"]) for f in files),
        "changed_files": len(files),
    }


def pull_file(api: str, repo: Repo, pr: Pull, change: dict[str, Any]) -> dict[str, Any]:
    full, path = repo.full_name, change["filename"]
    return {
        **change,
        "blob_url": f"{HTML}/{full}/blob/{pr.head_sha}/{path}",
        "raw_url": f"{HTML}/{full}/raw/{pr.head_sha}/{path}",
        "contents_url": f"{api}/repos/{full}/contents/{path}?ref={pr.head_sha}",
    }


def _pr_ref(api: str, repo: Repo, pr: Pull) -> dict[str, Any]:
    """The short PR reference GitHub puts in check runs and suites."""
    mini = {"id": repo.id, "url": f"{api}/repos/{repo.full_name}", "name": repo.name}
    return {"url": f"{api}/repos/{repo.full_name}/pulls/{pr.number}", "id": pr.id, "number": pr.number,
            "head": {"ref": pr.head_ref, "sha": pr.head_sha, "repo": mini},
            "base": {"ref": pr.base_ref, "sha": pr.base_sha, "repo": mini}}


def app(api: str) -> dict[str, Any]:
    return {**APP, "node_id": node_id("A", APP["id"]), "owner": user(api, "github"), "description": "",
            "external_url": "https://help.github.com/en/actions", "html_url": f"{HTML}/apps/github-actions",
            "created_at": "2018-07-30T09:30:17Z", "updated_at": "2019-12-10T19:04:12Z",
            "permissions": {"checks": "write", "pull_requests": "write"}, "events": []}


def check_suite(api: str, repo: Repo, runs: list[CheckRun], head_branch: str | None, commit: Commit | None,
                pulls: list[Pull], *, full: bool) -> dict[str, Any]:
    first = runs[0]
    done = all(r.status == "completed" for r in runs)
    suite: dict[str, Any] = {
        "id": first.suite_id, "node_id": node_id("CS", first.suite_id), "head_branch": head_branch,
        "head_sha": first.head_sha, "status": "completed" if done else "in_progress",
        "conclusion": suite_conclusion(runs) if done else None,
        "url": f"{api}/repos/{repo.full_name}/check-suites/{first.suite_id}",
        "before": commit.parent if commit else None, "after": first.head_sha,
        "pull_requests": [_pr_ref(api, repo, p) for p in pulls], "app": app(api),
        "created_at": first.started_at, "updated_at": max(r.completed_at or r.started_at for r in runs),
    }
    if full:
        suite["latest_check_runs_count"] = len(runs)
        suite["check_runs_url"] = f"{api}/repos/{repo.full_name}/check-suites/{first.suite_id}/check-runs"
        if commit is not None:
            person = {"name": commit.author, "email": f"{commit.author}@users.noreply.github.com"}
            suite["head_commit"] = {"id": commit.sha, "tree_id": commit.tree_sha, "message": commit.message,
                                    "timestamp": commit.at, "author": person, "committer": person}
    return suite


def suite_conclusion(runs: list[CheckRun]) -> str:
    conclusions = {r.conclusion for r in runs}
    for worst in ("failure", "timed_out", "cancelled", "action_required"):
        if worst in conclusions:
            return worst
    return "success" if conclusions <= {"success", "neutral", "skipped"} else "neutral"


def check_run(api: str, repo: Repo, run: CheckRun, suite: dict[str, Any] | None, pulls: list[Pull]) -> dict[str, Any]:
    full = repo.full_name
    return {
        "id": run.id, "name": run.name, "node_id": node_id("CR", run.id), "head_sha": run.head_sha,
        "external_id": "", "url": f"{api}/repos/{full}/check-runs/{run.id}",
        "html_url": f"{HTML}/{full}/runs/{run.id}", "details_url": f"{HTML}/{full}/runs/{run.id}",
        "status": run.status, "conclusion": run.conclusion, "started_at": run.started_at,
        "completed_at": run.completed_at,
        "output": {"title": run.output.get("title"), "summary": run.output.get("summary"),
                   "text": run.output.get("text"), "annotations_count": len(run.annotations),
                   "annotations_url": f"{api}/repos/{full}/check-runs/{run.id}/annotations"},
        "check_suite": suite if suite is not None else {"id": run.suite_id},
        "app": app(api), "pull_requests": [_pr_ref(api, repo, p) for p in pulls],
    }


def combined_status(api: str, repo: Repo, sha: str, statuses: list[CommitStatus]) -> dict[str, Any]:
    latest: dict[str, CommitStatus] = {}
    for status in statuses:  # the newest status per context counts
        latest[status.context] = status
    states = {s.state for s in latest.values()}
    if states & {"error", "failure"}:
        state = "failure"
    elif not latest or "pending" in states:
        state = "pending"
    else:
        state = "success"
    full = repo.full_name
    return {
        "state": state, "sha": sha, "total_count": len(latest), "repository": repository(api, repo),
        "commit_url": f"{api}/repos/{full}/commits/{sha}", "url": f"{api}/repos/{full}/commits/{sha}/status",
        "statuses": [
            {"url": f"{api}/repos/{full}/statuses/{sha}", "avatar_url": None, "id": s.id,
             "node_id": node_id("SC", s.id), "state": s.state, "description": s.description or None,
             "target_url": None, "context": s.context, "created_at": s.created_at, "updated_at": s.created_at}
            for s in latest.values()
        ],
    }


def review(api: str, repo: Repo, rv: Review, *, webhook: bool) -> dict[str, Any]:
    full = repo.full_name
    return {
        "id": rv.id, "node_id": node_id("PRR", rv.id), "user": user(api, rv.user), "body": rv.body or None,
        # The REST API spells states in capitals, the webhook in lower case.
        "state": rv.state.lower() if webhook else rv.state,
        "html_url": f"{HTML}/{full}/pull/{rv.number}#pullrequestreview-{rv.id}",
        "pull_request_url": f"{api}/repos/{full}/pulls/{rv.number}", "author_association": "COLLABORATOR",
        "_links": {"html": {"href": f"{HTML}/{full}/pull/{rv.number}#pullrequestreview-{rv.id}"},
                   "pull_request": {"href": f"{api}/repos/{full}/pulls/{rv.number}"}},
        "submitted_at": rv.submitted_at, "commit_id": rv.commit_id,
    }


def issue_for_pull(api: str, repo: Repo, pr: Pull) -> dict[str, Any]:
    full, n = repo.full_name, pr.number
    return {
        "url": f"{api}/repos/{full}/issues/{n}", "repository_url": f"{api}/repos/{full}",
        "labels_url": f"{api}/repos/{full}/issues/{n}/labels{{/name}}",
        "comments_url": f"{api}/repos/{full}/issues/{n}/comments",
        "events_url": f"{api}/repos/{full}/issues/{n}/events", "html_url": f"{HTML}/{full}/pull/{n}",
        "id": pr.id, "node_id": node_id("I", pr.id), "number": n, "title": pr.title, "user": user(api, pr.user),
        "labels": [], "state": pr.state, "locked": False, "assignee": None, "assignees": [], "milestone": None,
        "comments": pr.comments, "created_at": pr.created_at, "updated_at": pr.updated_at,
        "closed_at": pr.closed_at, "author_association": "CONTRIBUTOR", "body": pr.body or None,
        # Present only when the issue is a pull request (GitHub's docs for issue_comment).
        "pull_request": {"url": f"{api}/repos/{full}/pulls/{n}", "html_url": f"{HTML}/{full}/pull/{n}",
                         "diff_url": f"{HTML}/{full}/pull/{n}.diff", "patch_url": f"{HTML}/{full}/pull/{n}.patch",
                         "merged_at": pr.merged_at},
    }


def issue_comment(api: str, repo: Repo, comment: IssueComment) -> dict[str, Any]:
    full = repo.full_name
    return {
        "url": f"{api}/repos/{full}/issues/comments/{comment.id}",
        "html_url": f"{HTML}/{full}/pull/{comment.number}#issuecomment-{comment.id}",
        "issue_url": f"{api}/repos/{full}/issues/{comment.number}", "id": comment.id,
        "node_id": node_id("IC", comment.id), "user": user(api, comment.user), "created_at": comment.created_at,
        "updated_at": comment.created_at, "author_association": "COLLABORATOR", "body": comment.body,
    }


def hook(api: str, repo: Repo, hook_id: int, target_url: str | None, created_at: str) -> dict[str, Any]:
    base = f"{api}/repos/{repo.full_name}/hooks/{hook_id}"
    return {
        "type": "Repository", "id": hook_id, "name": "web", "active": True, "events": ["*"],
        "config": {"content_type": "json", "insecure_ssl": "0", "url": target_url or ""},
        "updated_at": created_at, "created_at": created_at, "url": base, "test_url": f"{base}/test",
        "ping_url": f"{base}/pings", "last_response": {"code": None, "status": "unused", "message": None},
    }


def annotation(api: str, repo: Repo, run: CheckRun, note: dict[str, Any]) -> dict[str, Any]:
    path = str(note["path"])
    return {
        "path": path, "start_line": note["start_line"], "end_line": note["end_line"],
        "start_column": note.get("start_column"), "end_column": note.get("end_column"),
        "annotation_level": note["annotation_level"], "title": note.get("title"), "message": note["message"],
        "raw_details": note.get("raw_details"), "blob_href": f"{HTML}/{repo.full_name}/blob/{run.head_sha}/{path}",
    }


def review_comment(api: str, repo: Repo, c: ReviewComment, diff_hunk: str) -> dict[str, Any]:
    full, n = repo.full_name, c.number
    url = f"{api}/repos/{full}/pulls/comments/{c.id}"
    html = f"{HTML}/{full}/pull/{n}#discussion_r{c.id}"
    body: dict[str, Any] = {
        "url": url, "pull_request_review_id": c.review_id, "id": c.id, "node_id": node_id("PRRC", c.id),
        "diff_hunk": diff_hunk, "path": c.path, "commit_id": c.commit_id, "original_commit_id": c.commit_id,
        "user": user(api, c.user), "body": c.body, "created_at": c.created_at, "updated_at": c.created_at,
        "html_url": html, "pull_request_url": f"{api}/repos/{full}/pulls/{n}",
        "author_association": "COLLABORATOR",
        "_links": {"self": {"href": url}, "html": {"href": html},
                   "pull_request": {"href": f"{api}/repos/{full}/pulls/{n}"}},
        "start_line": c.start_line, "original_start_line": c.start_line,
        "start_side": c.side if c.start_line is not None else None,
        "line": c.line, "original_line": c.line, "side": c.side, "position": c.line, "original_position": c.line,
        "subject_type": "line" if c.line is not None else "file",
    }
    if c.in_reply_to is not None:
        body["in_reply_to_id"] = c.in_reply_to
    return body


def push(api: str, repo: Repo, ref: str, before: str, after: str, *, forced: bool, pusher: str,
         commits: list[tuple[Commit, dict[str, list[str]]]]) -> dict[str, Any]:
    """A `push` webhook body (repository and sender are added by the sender)."""
    full = repo.full_name

    def entry(commit: Commit, files: dict[str, list[str]]) -> dict[str, Any]:
        person = {"name": commit.author, "email": f"{commit.author}@users.noreply.github.com"}
        return {"id": commit.sha, "tree_id": commit.tree_sha, "distinct": True, "message": commit.message,
                "timestamp": commit.at, "url": f"{HTML}/{full}/commit/{commit.sha}", "author": person,
                "committer": person, "added": files["added"], "removed": files["removed"],
                "modified": files["modified"]}

    zero = "0" * 40
    listed = [entry(c, f) for c, f in commits]
    return {
        "ref": ref, "before": before, "after": after, "created": before == zero, "deleted": after == zero,
        "forced": forced, "base_ref": None, "compare": f"{HTML}/{full}/compare/{before[:12]}...{after[:12]}",
        "commits": listed, "head_commit": listed[-1] if listed else None,
        "pusher": {"name": pusher, "email": f"{pusher}@users.noreply.github.com"},
        "repository": _push_repository(api, repo),
    }


def _push_repository(api: str, repo: Repo) -> dict[str, Any]:
    """The push event's repository: GitHub sends created_at and pushed_at as epoch seconds there."""
    body = repository(api, repo)
    created = int(datetime.strptime(repo.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    body["created_at"] = created
    body["pushed_at"] = int(time.time())
    return body


def app_record(api: str, app_id: int, slug: str, permissions: dict[str, str], owner: str | None) -> dict[str, Any]:
    return {"id": app_id, "slug": slug, "node_id": node_id("A", app_id), "owner": user(api, owner or "foundry"),
            "name": slug, "description": "", "external_url": "", "html_url": f"{HTML}/apps/{slug}",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "permissions": permissions, "events": ["pull_request", "check_run", "check_suite", "push"]}
