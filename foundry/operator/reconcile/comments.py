"""Posting a run's comments once per purpose (foundry.connectors.comments.post_once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.connectors.comments import post_once
from foundry.operator.faults import crash_point
from foundry.operator.outside import outside_call
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def post(deps: "Deps", run: RunView, purpose: str, body: str) -> dict[str, str]:
    """Post (or find) the comment for `purpose`; returns the `status.comments`
    map to record with the transition. The id is recorded by the caller's
    status write, so the fault point sits between the post and that write."""
    recorded: dict[str, str] = {}

    def record(comment_id: str) -> None:
        recorded[purpose] = comment_id
        crash_point("after-comment-post")

    with outside_call(f"posting the {purpose} comment on {run.issue_key}"):
        # Only Foundry's own comments count as "already posted": run names are
        # computable, so anyone could paste the marker first (viewer id is cached).
        author = None if run.comments.get(purpose) else deps.linear.viewer_id()
        comment_id = post_once(deps.linear, run.issue_id, run.name, purpose, body,
                               run.comments.get(purpose), record, author_id=author)
    comments = run.comments
    comments[purpose] = comment_id
    return comments
