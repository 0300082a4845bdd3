"""Which command a node the sweep read asks for (pure functions, no I/O).

A node is turned into the payload a webhook would have carried and handed to
the webhooks' own mapping (foundry.bridge.mapping.map_linear), so the sweep
and the webhooks cannot disagree on what a ticket or a comment means. What a
webhook learns from `updatedFrom` — whether an update only moved the issue's
workflow state — the sweep learns from the issue's history instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from foundry.bridge.mapping import BadPayload, Command, Decision, Ignore, Intake, map_linear, parse_time
from foundry.domain.triggers import TriggerRule
from foundry.domain.phases import ACTIVE_PHASE_NAMES


@dataclass(frozen=True)
class LastRun:
    """The issue's latest run as the database has it."""

    phase: str
    ticket_updated_at: datetime

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASE_NAMES


# History fields that say what changed besides the workflow state.
_CONTENT_FIELDS = ("fromTitle", "toTitle", "addedLabelIds", "removedLabelIds", "fromPriority", "toPriority")
_STATE_FIELDS = ("fromStateId", "toStateId")


def _number(value: Any) -> Any:
    # GraphQL's Float for what webhooks send as an integer (priority).
    return int(value) if isinstance(value, float) and value.is_integer() else value


def issue_payload(node: dict[str, Any]) -> dict[str, Any]:
    """An `Issue` `update` webhook's payload for an issue node (no `updatedFrom`: the sweep cannot know it)."""
    data = dict(node)
    if "priority" in data:
        data["priority"] = _number(data["priority"])
    return {"action": "update", "type": "Issue", "data": data}


def comment_payload(node: dict[str, Any]) -> dict[str, Any]:
    """A `Comment` `create` webhook's payload for a comment node."""
    user = node.get("user") if isinstance(node.get("user"), dict) else None
    issue = node.get("issue") if isinstance(node.get("issue"), dict) else {}
    data: dict[str, Any] = {"id": node.get("id"), "body": node.get("body"), "createdAt": node.get("createdAt"),
                            "issueId": issue.get("id")}
    payload: dict[str, Any] = {"action": "create", "type": "Comment", "data": data}
    if user is not None:
        data["user"] = user
        data["userId"] = user.get("id")
        payload["actor"] = user  # the author of a created comment is its actor
    return payload


def is_state_move(entry: dict[str, Any]) -> bool:
    """Whether a history entry records a workflow-state move and nothing else Foundry reads."""
    moved = any(entry.get(f) for f in _STATE_FIELDS)
    content = entry.get("updatedDescription") or any(entry.get(f) not in (None, []) for f in _CONTENT_FIELDS)
    return moved and not content


def changed_since(history: Iterable[dict[str, Any]], after: datetime) -> bool:
    """Whether an entry newer than `after` changed the ticket itself (not only its state).

    An entry that names none of the fields read here (an assignee, a project)
    counts as a change, as a webhook whose `updatedFrom` names them does.
    """
    for entry in history:
        try:
            at = parse_time(entry.get("createdAt"), "history.createdAt")
        except BadPayload:
            continue
        if at > after and not is_state_move(entry):
            return True
    return False


@dataclass(frozen=True)
class NeedsHistory:
    """The ticket is newer than its last, ended run: the history says whether it changed or only moved."""

    intake: Intake
    after: datetime


def issue_command(node: dict[str, Any], rule: TriggerRule, last: LastRun | None) -> Intake | Ignore | NeedsHistory:
    """What the sweep does with one issue node. Raises BadPayload for a node the mapping refuses.

    - no run ever, and the issue carries the trigger → intake;
    - a run is active → nothing (an intake would attach to it);
    - the last run ended and the ticket is not newer → nothing (the claim would say unchanged);
    - the last run ended and the ticket is newer → the history decides (NeedsHistory), unless
      the trigger is a set of states: then every update counts, as for a webhook.
    """
    command: Command = map_linear("Issue", issue_payload(node), rule)
    if not isinstance(command, Intake):
        return command if isinstance(command, Ignore) else Ignore("not an intake")
    if last is None:
        return command
    if last.active:
        return Ignore("a run is active")
    if command.ticket.updated_at <= last.ticket_updated_at:
        return Ignore("the ticket has not changed since the last run")
    if rule.states:
        return command
    return NeedsHistory(command, last.ticket_updated_at)


def decision_command(node: dict[str, Any], rule: TriggerRule, run_created_at: datetime | None) -> Decision | Ignore:
    """What the sweep does with one comment node on an issue whose active run began at `run_created_at`.

    A comment older than the run cannot be meant for it (an old approval must
    not reach a newer attempt). Raises BadPayload for a node the mapping refuses.
    """
    if run_created_at is None:
        return Ignore("the issue has no active run")
    created = parse_time(node.get("createdAt"), "comment.createdAt")
    if created <= run_created_at:
        return Ignore("the comment is older than the active run")
    command = map_linear("Comment", comment_payload(node), rule)
    return command if isinstance(command, (Decision, Ignore)) else Ignore("not a decision")
