"""The feedback of a remediation attempt (input.json `feedback`): what failed, as GitHub has it.

- the failing check runs on the head (the newest run per name), with their
  output title/summary/text and annotations (file, lines, message);
- the failing commit statuses, with their descriptions;
- the standing changes-requested reviews on the head, with their comments
  (file and line).

`summarise` is pure; `gather` reads GitHub. Every text is bounded so a noisy
CI log cannot push the job input past what a ConfigMap holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from foundry.operator.outside import outside_call
from foundry.operator.reconcile.prtruth import FAILED_CONCLUSIONS, FAILED_STATES, PRTruth

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

MAX_TEXT = 8000  # characters per output text / summary / comment body
MAX_ITEMS = 50  # annotations per check, comments per review, checks, statuses


def _cut(value: Any, limit: int = MAX_TEXT) -> str:
    text = str(value or "")
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def failing_checks(check_runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The newest run of each check name, where it failed."""
    latest: dict[str, Mapping[str, Any]] = {}
    for cr in check_runs:
        name = str(cr.get("name") or "")
        if name not in latest or int(cr.get("id") or 0) > int(latest[name].get("id") or 0):
            latest[name] = cr
    return [c for c in latest.values() if c.get("status") == "completed" and c.get("conclusion") in FAILED_CONCLUSIONS]


def changes_requested(reviews: Sequence[Mapping[str, Any]], head_sha: str) -> list[Mapping[str, Any]]:
    """Each reviewer's standing decisive review of the head, where it requests changes."""
    by_user: dict[str, Mapping[str, Any]] = {}
    for r in sorted(reviews, key=lambda r: (r.get("submitted_at") or "", r.get("id") or 0)):
        state = str(r.get("state") or "").upper()
        if state not in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            continue
        if r.get("commit_id") and r["commit_id"] != head_sha:
            continue
        by_user[str((r.get("user") or {}).get("login") or "")] = r
    return [r for r in by_user.values() if str(r.get("state")).upper() == "CHANGES_REQUESTED"]


def _annotation(a: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(a.get("path") or ""), "level": str(a.get("annotation_level") or ""),
                           "message": _cut(a.get("message"), 2000)}
    for src, dst in (("start_line", "startLine"), ("end_line", "endLine")):
        if isinstance(a.get(src), int):
            out[dst] = a[src]
    if a.get("title"):
        out["title"] = _cut(a["title"], 200)
    return out


def _comment(c: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(c.get("path") or ""), "body": _cut(c.get("body"), 2000)}
    line = c.get("line") if isinstance(c.get("line"), int) else c.get("original_line")
    if isinstance(line, int):
        out["line"] = line
    return out


def summarise(reason: str, head_sha: str, *, checks: Sequence[Mapping[str, Any]],
              annotations: Mapping[int, Sequence[Mapping[str, Any]]], statuses: Sequence[Mapping[str, Any]],
              reviews: Sequence[Mapping[str, Any]],
              review_comments: Mapping[int, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """The `feedback` object from GitHub's answers (already filtered to what failed)."""
    out_checks = []
    for c in checks[:MAX_ITEMS]:
        output = c.get("output") or {}
        out_checks.append({
            "name": str(c.get("name") or ""), "conclusion": str(c.get("conclusion") or ""),
            "title": _cut(output.get("title"), 500), "summary": _cut(output.get("summary")),
            "text": _cut(output.get("text")),
            "annotations": [_annotation(a) for a in list(annotations.get(int(c.get("id") or 0)) or [])[:MAX_ITEMS]],
        })
    out_statuses = [{"context": str(s.get("context") or ""), "state": str(s.get("state") or ""),
                     "description": _cut(s.get("description"), 1000)}
                    for s in statuses if s.get("state") in FAILED_STATES][:MAX_ITEMS]
    out_reviews = [{"user": str((r.get("user") or {}).get("login") or ""), "state": "CHANGES_REQUESTED",
                    "body": _cut(r.get("body")),
                    "comments": [_comment(c) for c in list(review_comments.get(int(r.get("id") or 0)) or [])[:MAX_ITEMS]]}
                   for r in reviews[:MAX_ITEMS]]
    return {"reason": reason, "headSha": head_sha, "checks": out_checks, "statuses": out_statuses,
            "reviews": out_reviews}


def gather(deps: "Deps", run_repo: str, truth: PRTruth, reason: str) -> dict[str, Any]:
    """Read what failed on the PR's head from GitHub and summarise it."""
    gh = deps.github
    with outside_call(f"reading the failures on {run_repo}@{truth.head_sha[:12]} from GitHub"):
        checks = failing_checks(gh.list_check_runs(run_repo, truth.head_sha))
        # annotations_count 0 spares a call; a payload without the count is asked anyway.
        annotations = {int(c["id"]): gh.list_check_run_annotations(run_repo, int(c["id"]))
                       for c in checks if (c.get("output") or {}).get("annotations_count") != 0}
        statuses = list((gh.combined_status(run_repo, truth.head_sha) or {}).get("statuses") or [])
        reviews = changes_requested(gh.list_reviews(run_repo, truth.number), truth.head_sha)
        comments = {int(r["id"]): gh.list_comments_for_review(run_repo, truth.number, int(r["id"])) for r in reviews}
    return summarise(reason, truth.head_sha, checks=checks, annotations=annotations, statuses=statuses,
                     reviews=reviews, review_comments=comments)
