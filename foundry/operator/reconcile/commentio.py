"""Posting a run's comments once per purpose (foundry.connectors.marked_comments.post_once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.connectors.marked_comments import post_once
from foundry.operator import dbio
from foundry.operator.checkpoints import reached
from foundry.operator.outside import outside_call
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def fence(deps: "Deps") -> None:
    leadership = getattr(deps, "leadership", None)  # a bare replica in the comment tests has none
    if leadership is not None:
        leadership.fence()


def post(deps: "Deps", run: RunView, purpose: str, body: str) -> dict[str, str]:
    """Post (or find) the comment for `purpose`; returns the `status.comments`
    map to record with the transition. The id is recorded by the caller's
    status write, so the fault point sits between the post and that write."""
    recorded: dict[str, str] = {}

    def record(comment_id: str) -> None:
        recorded[purpose] = comment_id
        reached("after-comment-post")

    what = f"posting the {purpose} comment on {run.issue_key}"
    recorded_id = run.comments.get(purpose)
    if recorded_id:
        comment_id = recorded_id
    else:
        # Search-then-post is crash-safe but not safe against a second replica
        # searching in the same moment: one replica at a time per run and purpose.
        with dbio.one_replica(deps, what, f"comment:{run.uid}:{purpose}"), outside_call(what):
            fence(deps)  # after the lock's wait: the Lease may have been lost meanwhile
            # Only Foundry's own comments count as "already posted": run names are
            # computable, so anyone could paste the marker first (viewer id is cached).
            comment_id = post_once(deps.linear, run.issue_id, run.name, purpose, body,
                                   None, record, author_id=deps.linear.viewer_id())
    comments = run.comments
    comments[purpose] = comment_id
    return comments
