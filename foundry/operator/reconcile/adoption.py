"""Adopting the PR on a run's branch only if it is Foundry's (foundry.domain.adoption).

A PR already adopted (its number recorded in status.pr) is not asked again:
later heads are the remediation attempts', judged by the diff policy. A PR
refused is told once: a Warning Event and one ticket comment (found again by
its marker after a restart, so never posted twice).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from foundry.connectors.comments import keyed_purpose
from foundry.domain import adoption
from foundry.operator.events import post_event
from foundry.operator.reconcile import comments
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

# (namespace, run, PR number) already told in this process; bounded, oldest first out.
_TOLD_MAX = 4096
_told: "OrderedDict[tuple[str, str, int], None]" = OrderedDict()
_told_lock = threading.Lock()


def refusal(deps: "Deps", run: RunView, repo: str, pull: dict[str, Any]) -> str | None:
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


def tell(deps: "Deps", run: RunView, pull: dict[str, Any], why: str) -> None:
    """The Warning Event and the one ticket comment about a PR not adopted."""
    number = int(pull["number"])
    key = (run.namespace, run.name, number)
    with _told_lock:
        if key in _told:
            return
    post_event(deps.api, run.body, "PullRequestNotAdopted", why, type_="Warning")
    comments.post(deps, run, keyed_purpose("pr_not_adopted", f"pr-{number}"),
                  adoption.not_adopted_comment(run.issue_key, number, pull.get("html_url", ""), why))
    with _told_lock:
        _told[key] = None
        while len(_told) > _TOLD_MAX:
            _told.popitem(last=False)
