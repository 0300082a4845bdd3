"""What GitHub says about the run's pull request, read fresh (never from hints),
and summarised into plain values. `summarise_*` are pure.

A PR on the run's branch is adopted only if it is Foundry's
(foundry.domain.adoption): the branch name is computable, so anyone could open
one. A PR already adopted (its number recorded in status.pr) is not asked
again: later heads are the remediation attempts', judged by the diff policy. A
PR refused is told once: a Warning Event and one ticket comment (found again
by its marker after a restart, so never posted twice).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from foundry.connectors.marked_comments import keyed_purpose
from foundry.domain import adoption
from foundry.operator.events import post_event
from foundry.operator.outside import outside_call
from foundry.operator.reconcile import commentio
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


@dataclass(frozen=True)
class PRTruth:
    number: int
    url: str
    head_sha: str
    state: str  # open | closed
    merged: bool
    files: tuple[str, ...]
    checks: str  # none | pending | success | failure: check runs and commit statuses (ci_verdict)
    review: str  # none | approved | changes_requested
    # GitHub's file entries (filename, status, previous_filename, additions, deletions), for the policy check.
    changes: tuple[Mapping[str, Any], ...] = ()
    body: str = ""  # the PR's description, where the PR step flags plan drift

    def status(self, branch: str) -> dict[str, Any]:
        return {"number": self.number, "url": self.url, "branch": branch, "headSha": self.head_sha,
                "state": self.state, "merged": self.merged, "checks": self.checks, "review": self.review}


_FILE_FIELDS = ("filename", "status", "previous_filename", "additions", "deletions")
FAILED_CONCLUSIONS = frozenset({"failure", "timed_out", "cancelled", "action_required", "startup_failure"})


def summarise_checks(check_runs: list[dict[str, Any]]) -> str:
    if not check_runs:
        return "none"
    # Re-runs of a check share its name; the newest (highest id) is the verdict.
    latest: dict[str, dict[str, Any]] = {}
    for cr in check_runs:
        name = cr.get("name", "")
        if name not in latest or cr.get("id", 0) > latest[name].get("id", 0):
            latest[name] = cr
    if any(c.get("status") != "completed" for c in latest.values()):
        return "pending"
    if any(c.get("conclusion") in FAILED_CONCLUSIONS for c in latest.values()):
        return "failure"
    return "success"


# A commit status's failing states (GitHub's older CI API: POST /repos/{o}/{r}/statuses/{sha}).
FAILED_STATES = frozenset({"error", "failure"})


def summarise_statuses(combined: Mapping[str, Any] | None) -> str:
    """The commit statuses' verdict from GET /repos/{o}/{r}/commits/{ref}/status; the newest per
    context counts. GitHub says "pending" for a commit without any status: that is "none" here."""
    latest: dict[str, Mapping[str, Any]] = {}
    for st in (combined or {}).get("statuses") or []:
        context = st.get("context", "")
        if context not in latest or st.get("id", 0) >= latest[context].get("id", 0):
            latest[context] = st
    if not latest:
        return "none"
    states = {st.get("state") for st in latest.values()}
    if "pending" in states:
        return "pending"
    return "failure" if states & FAILED_STATES else "success"


def ci_verdict(checks: str, statuses: str) -> str:
    """Check runs and commit statuses together, CI reporting through either (or both). As for
    check runs alone, pending while anything is, so a remediation hears of every failure at once."""
    for verdict in ("pending", "failure", "success"):
        if verdict in (checks, statuses):
            return verdict
    return "none"


def summarise_reviews(reviews: list[dict[str, Any]], head_sha: str) -> str:
    """The standing verdict on the head commit: each reviewer's latest decisive review counts."""
    by_user: dict[str, str] = {}
    for r in sorted(reviews, key=lambda r: (r.get("submitted_at") or "", r.get("id", 0))):
        state = (r.get("state") or "").upper()
        if state not in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            continue
        if r.get("commit_id") and r["commit_id"] != head_sha:
            continue  # a review of an older commit says nothing about this one
        by_user[(r.get("user") or {}).get("login", "")] = state
    if "CHANGES_REQUESTED" in by_user.values():
        return "changes_requested"
    if "APPROVED" in by_user.values():
        return "approved"
    return "none"


def fetch(deps: "Deps", run: RunView) -> PRTruth | None:
    repo = deps.config.repositories[run.status["repo"]].github
    with outside_call(f"reading the pull request of {run.name} from GitHub"):
        pull = deps.github.find_pull_by_branch(repo, run.branch)
        if pull is None:
            return None
        # The branch name is computable: a PR someone else opened from it is not the run's.
        why = _refusal(deps, run, repo, pull)
        if why is not None:
            _tell_not_adopted(deps, run, pull, why)
            return None
        number = int(pull["number"])
        head = pull["head"]["sha"]
        changes = tuple({k: f[k] for k in _FILE_FIELDS if k in f} for f in deps.github.list_pull_files(repo, number))
        files = tuple(str(f["filename"]) for f in changes)
        checks = ci_verdict(summarise_checks(deps.github.list_check_runs(repo, head)),
                            summarise_statuses(deps.github.combined_status(repo, head)))
        review = summarise_reviews(deps.github.list_reviews(repo, number), head)
    merged = bool(pull.get("merged") or pull.get("merged_at"))
    return PRTruth(number, pull.get("html_url", ""), head, pull.get("state", "open"), merged, files, checks, review,
                   changes, str(pull.get("body") or ""))


# (namespace, run, PR number) already told in this process; bounded, oldest first out.
_TOLD_MAX = 4096
_told: "OrderedDict[tuple[str, str, int], None]" = OrderedDict()
_told_lock = threading.Lock()


def _refusal(deps: "Deps", run: RunView, repo: str, pull: dict[str, Any]) -> str | None:
    """Why the PR is not Foundry's (None: adopt it). Called inside the caller's outside_call."""
    number = int(pull["number"])
    if run.pr.get("number") == number:
        return None
    why = adoption.check_opener(number, (pull.get("user") or {}).get("login"), deps.github.login())
    if why is None:
        sha = pull["head"]["sha"]
        commit = (deps.github.get_commit(repo, sha).get("commit") or {})
        why = adoption.check_head(number, sha, (commit.get("author") or {}).get("name"), commit.get("message") or "",
                                  run.name, run.attempt)
    return why


def _tell_not_adopted(deps: "Deps", run: RunView, pull: dict[str, Any], why: str) -> None:
    """The Warning Event and the one ticket comment about a PR not adopted."""
    number = int(pull["number"])
    key = (run.namespace, run.name, number)
    with _told_lock:
        if key in _told:
            return
    post_event(deps.api, run.body, "PullRequestNotAdopted", why, type_="Warning")
    commentio.post(deps, run, keyed_purpose("pr_not_adopted", f"pr-{number}"),
                  adoption.not_adopted_comment(run.issue_key, number, pull.get("html_url", ""), why))
    with _told_lock:
        _told[key] = None
        while len(_told) > _TOLD_MAX:
            _told.popitem(last=False)
