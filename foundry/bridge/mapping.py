"""Which idempotent command a webhook asks for. Pure functions, no I/O.

The bridge never decides a run's transition; it only turns an event into one
of: intake (create-or-attach the run), a decision (approve/reject/stop/replan,
keyed by approver), a pr-hint (make the operator re-read the PR), or ignore. Payload
fields Foundry relies on are validated here, so a signed but malformed event
becomes a 400 with a reason rather than an exception deeper down.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from foundry.domain.confirmation import parse_command
from foundry.domain.naming import InvalidNameInput, run_name
from foundry.domain.triggers import DEFAULT_TRIGGER_LABEL, TriggerRule

TRACKER = "linear"
# Limits of the FoundryRun schema (crds/foundryrun.yaml): longer values are cut
# here rather than refused by the API server after the claim was made.
MAX_TEXT = 100_000  # a ticket description larger than this is cut, not refused
MAX_SHORT = 1_000
MAX_TITLE = 1024
MAX_LABELS = 64
MAX_LABEL = 256
MAX_URL = 2048

# Linear team keys are short upper-case words; branch names are often lower
# case (`alice/acme-42-fix-login`), so keys are matched case-insensitively.
_ISSUE_KEY = re.compile(r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9]{0,9}-[0-9]{1,9})(?![A-Za-z0-9])")
_ISSUE_KEY_EXACT = re.compile(r"^[A-Z][A-Z0-9]{0,31}-[0-9]{1,9}$")
_TEAM_KEY = re.compile(r"^[A-Z][A-Z0-9]{0,31}$")
_URL = re.compile(r"^https?://")
RUN_BRANCH_PREFIX = "foundry/"

# GitHub actions after which the PR's state on GitHub may have changed in a way
# the operator cares about; anything else (labels, assignees, ...) is noise.
_PR_ACTIONS = frozenset(
    {"opened", "reopened", "synchronize", "closed", "edited", "ready_for_review", "converted_to_draft"}
)
_REVIEW_ACTIONS = frozenset({"submitted", "dismissed", "edited"})
KNOWN_GITHUB_EVENTS = frozenset({"pull_request", "pull_request_review", "check_suite", "check_run", "ping"})
KNOWN_LINEAR_EVENTS = frozenset({"Issue", "Comment"})


# Linear workflow-state types that mean the issue's work is over.
CLOSED_STATE_TYPES = frozenset({"completed", "canceled"})
# The Issue fields a workflow-state move changes (`updatedFrom` keys besides
# updatedAt): the state, the timestamps Linear keeps for it, the board position.
STATE_MOVE_FIELDS = frozenset({"stateId", "startedAt", "completedAt", "canceledAt", "startedTriageAt", "triagedAt",
                               "autoClosedAt", "sortOrder"})


class BadPayload(ValueError):
    """A signed event lacks a field the command needs (answered 400 with this message)."""


@dataclass(frozen=True)
class Ticket:
    issue_id: str
    issue_key: str
    title: str
    description: str
    url: str
    labels: tuple[str, ...]
    state: str | None
    team_key: str | None
    updated_at: datetime
    priority: int | None

    def snapshot(self) -> dict[str, Any]:
        """The `spec.ticket` of a FoundryRun (contracts.md)."""
        ticket: dict[str, Any] = {
            "title": self.title,
            "description": self.description,
            "labels": list(self.labels),
            "updatedAt": self.updated_at.isoformat().replace("+00:00", "Z"),
        }
        if self.url:
            ticket["url"] = self.url
        if self.state is not None:
            ticket["state"] = self.state
        if self.team_key is not None:
            ticket["teamKey"] = self.team_key
        if self.priority is not None:
            ticket["priority"] = self.priority
        return ticket


@dataclass(frozen=True)
class Intake:
    ticket: Ticket
    actor: str | None

    @property
    def coalesce_key(self) -> tuple[str, str, str]:
        # Deliveries that would send the identical claim can share one execution.
        return ("intake", self.ticket.issue_id, self.ticket.updated_at.isoformat())


@dataclass(frozen=True)
class Decision:
    decision: str  # approve | reject | stop | replan
    issue_id: str
    approver: str
    comment: str
    comment_id: str | None = None  # the Linear comment; the operator reads it back before the decision counts
    plan_ref: str | None = None  # the plan hash the comment names (full or short), for approve and replan


@dataclass(frozen=True)
class PrHint:
    event: str
    run_names: tuple[str, ...]  # from branches foundry/<run-name>, most specific first
    issue_keys: tuple[str, ...]  # from branch names and titles
    pr_number: int | None = None


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Ping:
    pass


Command = Intake | Decision | PrHint | Ignore | Ping


# ---------------------------------------------------------------- helpers


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadPayload(f"{where} must be an object")
    return value


def _str(data: dict[str, Any], key: str, where: str, *, limit: int = MAX_SHORT) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadPayload(f"missing or invalid field {where}.{key}")
    if len(value) > limit:
        raise BadPayload(f"field {where}.{key} is longer than {limit} characters")
    return value


def _opt_str(data: dict[str, Any], key: str, *, limit: int = MAX_SHORT) -> str | None:
    value = data.get(key)
    if isinstance(value, str) and value.strip():
        return value[:limit]
    return None


def parse_time(value: Any, where: str) -> datetime:
    """An ISO-8601 timestamp with a zone (Linear sends `2024-05-01T10:00:00.000Z`)."""
    if not isinstance(value, str):
        raise BadPayload(f"missing or invalid field {where}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise BadPayload(f"field {where} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise BadPayload(f"field {where} has no time zone")
    return parsed


def _label_names(data: dict[str, Any]) -> tuple[str, ...]:
    labels = data.get("labels")
    if labels is None:
        return ()
    if isinstance(labels, dict) and isinstance(labels.get("nodes"), list):  # GraphQL connection shape
        labels = labels["nodes"]
    if not isinstance(labels, list):
        raise BadPayload("field data.labels must be a list")
    names: list[str] = []
    for item in labels:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name.strip() and len(names) < MAX_LABELS:
            names.append(name[:MAX_LABEL])
    return tuple(names)


def _check_issue_id(issue_id: str) -> None:
    try:
        run_name(TRACKER, issue_id, 1)  # the naming rules are the authority on valid ids
    except InvalidNameInput as exc:
        raise BadPayload(f"field data.id: {exc}") from None


def _actor_identity(person: Any) -> str | None:
    """The identity an approval is keyed by: email when Linear sends it, else the user id."""
    if not isinstance(person, dict):
        return None
    for key in ("email", "id"):
        value = person.get(key)
        if isinstance(value, str) and value.strip() and len(value) <= 256:
            return value.strip()
    return None


# ---------------------------------------------------------------- Linear


def ticket_from_issue(data: dict[str, Any]) -> Ticket:
    issue_id = _str(data, "id", "data", limit=200)
    _check_issue_id(issue_id)
    key = _str(data, "identifier", "data", limit=40).strip().upper()
    if not _ISSUE_KEY_EXACT.match(key):
        raise BadPayload(f"field data.identifier is not an issue key like ACME-42: {key[:40]!r}")
    state = data.get("state")
    team = data.get("team")
    team_key = _opt_str(team, "key", limit=32) if isinstance(team, dict) else None
    if team_key is None or not _TEAM_KEY.match(team_key.upper()):
        team_key = key.split("-", 1)[0]
    url = _opt_str(data, "url", limit=MAX_URL)
    priority = data.get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 4:
        priority = None
    description = data.get("description")
    return Ticket(
        issue_id=issue_id,
        issue_key=key,
        title=_str(data, "title", "data", limit=MAX_TEXT)[:MAX_TITLE],
        description=description[:MAX_TEXT] if isinstance(description, str) else "",
        url=url if url and _URL.match(url) else "",
        labels=_label_names(data),
        state=_opt_str(state, "name", limit=MAX_LABEL) if isinstance(state, dict) else None,
        team_key=team_key.upper(),
        updated_at=parse_time(data.get("updatedAt"), "data.updatedAt"),
        priority=priority,
    )


def map_linear(event: str, payload: dict[str, Any], rule: TriggerRule) -> Command:
    """The command for a Linear delivery whose envelope (type, action, data) is already checked."""
    action = payload["action"]
    data = payload["data"]
    if event == "Issue":
        if action not in ("create", "update"):
            return Ignore(f"Issue {action[:40]} is not used")
        ticket = ticket_from_issue(data)
        state = data.get("state")
        if isinstance(state, dict) and state.get("type") in CLOSED_STATE_TYPES:
            # Done or cancelled work starts nothing, whatever its labels say; this
            # is also how Foundry's own "move to Done" does not start a new attempt.
            return Ignore(f"issue is {state['type']}")
        if action == "update" and not rule.states and _only_moved(payload.get("updatedFrom")):
            # The ticket Foundry reads did not change, so there is nothing new to
            # work on. This is how Foundry's own moves (In Progress, In Review)
            # arriving late or again after the run ended do not start an attempt:
            # each bumps updatedAt, which the claim would take for a newer ticket.
            return Ignore("only the workflow state changed")
        if not rule.matches(ticket.labels, ticket.state, ticket.team_key):
            return Ignore("issue does not carry the trigger")
        return Intake(ticket=ticket, actor=_actor_identity(payload.get("actor")))
    if event == "Comment":
        if action != "create":
            return Ignore(f"Comment {action[:40]} is not used")
        body = data.get("body")
        if not isinstance(body, str):
            raise BadPayload("missing or invalid field data.body")
        # Parsed as the operator parses the comment when it confirms the decision with Linear.
        parsed = parse_command(body)
        if parsed is None:
            return Ignore("comment is not a /foundry command")
        issue_id = data.get("issueId")
        if not isinstance(issue_id, str) and isinstance(data.get("issue"), dict):
            issue_id = data["issue"].get("id")
        if not isinstance(issue_id, str) or not issue_id.strip():
            raise BadPayload("missing or invalid field data.issueId")
        _check_issue_id(issue_id)
        # The comment's author, from the signed payload: data.user when present,
        # else the actor (who, for a create, is the author).
        approver = _actor_identity(data.get("user")) or _actor_identity(payload.get("actor"))
        if approver is None and isinstance(data.get("userId"), str) and data["userId"].strip():
            approver = data["userId"].strip()
        if approver is None:
            raise BadPayload("comment carries no author (data.user, actor or data.userId)")
        # The operator reads the comment back from Linear by this id before the
        # decision counts, so a command without one could never count: refuse it here.
        comment_id = data.get("id")
        if not isinstance(comment_id, str) or not 0 < len(comment_id.strip()) <= 128:
            raise BadPayload("missing or invalid field data.id (the comment's id)")
        decision, plan_ref, note = parsed
        return Decision(
            decision=decision,
            issue_id=issue_id,
            approver=approver,
            comment=note[:MAX_SHORT],
            comment_id=comment_id.strip(),
            plan_ref=plan_ref,
        )
    return Ignore(f"Linear {event[:40]} events are not used")


def _only_moved(updated_from: Any) -> bool:
    """Whether an Issue update's `updatedFrom` names a workflow-state move and nothing else."""
    if not isinstance(updated_from, dict):
        return False  # not said: treat the update as a change
    changed = set(updated_from) - {"updatedAt"}
    return bool(changed) and changed <= STATE_MOVE_FIELDS


# ---------------------------------------------------------------- GitHub


def _branch_of(ref: Any) -> str | None:
    if not isinstance(ref, str) or not ref:
        return None
    return ref.removeprefix("refs/heads/")


def correlation(branches: Sequence[str], titles: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Run names (from `foundry/<run>` branches) and issue keys (from branches, then titles), deduplicated in order."""
    runs: list[str] = []
    keys: list[str] = []
    for branch in branches:
        if branch.startswith(RUN_BRANCH_PREFIX):
            candidate = branch[len(RUN_BRANCH_PREFIX):]
            if candidate and candidate not in runs and len(candidate) <= 63:
                runs.append(candidate)
    # A run branch names its run exactly; its hash fragments (`...-3f6c-1`)
    # must not be mistaken for issue keys.
    texts = [b for b in branches if not b.startswith(RUN_BRANCH_PREFIX)] + list(titles)
    for text in texts:
        for found in _ISSUE_KEY.findall(text):
            key = found.upper()
            if key not in keys:
                keys.append(key)
    return tuple(runs), tuple(keys)


def _pr_refs(pr: Any) -> tuple[list[str], list[str], int | None]:
    if not isinstance(pr, dict):
        return [], [], None
    head = pr.get("head")
    branch = _branch_of(head.get("ref")) if isinstance(head, dict) else None
    title = pr.get("title")
    number = pr.get("number")
    return (
        [branch] if branch else [],
        [title[:MAX_SHORT]] if isinstance(title, str) else [],
        number if isinstance(number, int) and not isinstance(number, bool) else None,
    )


def _hint(event: str, branches: list[str], titles: list[str], number: int | None) -> Command:
    runs, keys = correlation(branches, titles)
    if not runs and not keys:
        return Ignore("no Foundry run branch or issue key in the event")
    return PrHint(event=event, run_names=runs, issue_keys=keys, pr_number=number)


def map_github(event: str, payload: dict[str, Any]) -> Command:
    """The command for a GitHub delivery (event from X-GitHub-Event)."""
    action = payload.get("action")
    action = action if isinstance(action, str) else ""
    if event == "ping":
        return Ping()
    if event == "pull_request":
        if action not in _PR_ACTIONS:
            return Ignore(f"pull_request {action[:40]} is not used")
        branches, titles, number = _pr_refs(_obj(payload.get("pull_request"), "pull_request"))
        return _hint(event, branches, titles, number)
    if event == "pull_request_review":
        if action not in _REVIEW_ACTIONS:
            return Ignore(f"pull_request_review {action[:40]} is not used")
        branches, titles, number = _pr_refs(_obj(payload.get("pull_request"), "pull_request"))
        return _hint(event, branches, titles, number)
    if event in ("check_suite", "check_run"):
        if action != "completed":
            return Ignore(f"{event} {action[:40]} is not used")
        body = _obj(payload.get(event), event)
        suite = body if event == "check_suite" else body.get("check_suite")
        branches: list[str] = []
        titles: list[str] = []
        number = None
        if isinstance(suite, dict) and (branch := _branch_of(suite.get("head_branch"))):
            branches.append(branch)
        prs = body.get("pull_requests")
        for pr in prs if isinstance(prs, list) else []:
            pr_branches, _, pr_number = _pr_refs(pr)
            branches.extend(b for b in pr_branches if b not in branches)
            number = number if number is not None else pr_number
        return _hint(event, branches, titles, number)
    return Ignore(f"GitHub {event[:40]} events are not used")
