"""Event → command mapping (pure): triggers, ticket snapshots, comment commands, PR correlation."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundry.bridge.mapping import (
    BadPayload,
    Decision,
    Ignore,
    Intake,
    Ping,
    PrHint,
    TriggerRule,
    correlation,
    map_github,
    map_linear,
)
from tests.support.bridge_kit import github_pull_request, linear_comment, linear_issue
from foundry.domain.naming import run_name

ISSUE_ID = "9cfb482a-81e3-4d5e-9f3a-3f6c2d0a41b7"
RULE = TriggerRule()


def _map(payload: dict[str, Any], rule: TriggerRule = RULE):
    return map_linear(payload["type"], payload, rule)


def test_labelled_issue_becomes_intake_with_snapshot() -> None:
    payload = linear_issue(ISSUE_ID, "ACME-42", labels=("Foundry", "bug"), state="Ready", description="Do it")
    command = _map(payload)
    assert isinstance(command, Intake)
    ticket = command.ticket
    assert (ticket.issue_id, ticket.issue_key, ticket.team_key) == (ISSUE_ID, "ACME-42", "ACME")
    assert ticket.updated_at == datetime(2025, 1, 1, 10, 0, tzinfo=timezone.utc)
    assert command.actor == "alice@example.com"
    assert ticket.snapshot() == {
        "title": "Fix the login redirect",
        "description": "Do it",
        "url": "https://linear.app/acme/issue/ACME-42",
        "labels": ["Foundry", "bug"],
        "updatedAt": "2025-01-01T10:00:00Z",
        "state": "Ready",
        "teamKey": "ACME",
        "priority": 2,
    }


@pytest.mark.parametrize(
    "rule, labels, state, triggered",
    [
        (TriggerRule(), ("foundry",), "Todo", True),
        (TriggerRule(), ("bug",), "Todo", False),
        (TriggerRule(label=None, states=("Ready",)), (), "ready", True),
        (TriggerRule(label=None, states=("Ready",)), ("foundry",), "Todo", False),
        (TriggerRule(label="foundry", states=("Ready",)), ("foundry",), "Ready", True),
        (TriggerRule(label="foundry", states=("Ready",)), ("foundry",), "Todo", False),
        (TriggerRule(label="foundry", states=("Ready",)), (), "Ready", False),
        (TriggerRule(label=None, states=()), ("foundry",), "Ready", False),
    ],
)
def test_trigger_rule(rule: TriggerRule, labels: tuple[str, ...], state: str, triggered: bool) -> None:
    command = _map(linear_issue(ISSUE_ID, "ACME-1", labels=labels, state=state), rule)
    assert isinstance(command, Intake) is triggered
    if not triggered:
        assert isinstance(command, Ignore) and "trigger" in command.reason


@pytest.mark.parametrize("state_type, triggered", [("unstarted", True), ("started", True), ("backlog", True),
                                                   ("completed", False), ("canceled", False)])
def test_done_or_cancelled_issues_start_nothing(state_type: str, triggered: bool) -> None:
    # Foundry itself moves a finished issue to Done; that update still carries
    # the label and must not open a new attempt.
    payload = linear_issue(ISSUE_ID, "ACME-1", state="Done")
    payload["data"]["state"]["type"] = state_type
    command = _map(payload)
    assert isinstance(command, Intake) is triggered
    if not triggered:
        assert isinstance(command, Ignore) and state_type in command.reason


@pytest.mark.parametrize("updated_from, rule, triggered", [
    ({"updatedAt": "t", "stateId": "s0"}, RULE, False),  # Foundry's own move to In Progress / In Review
    ({"updatedAt": "t", "stateId": "s0", "startedAt": None, "sortOrder": 1.0}, RULE, False),
    ({"updatedAt": "t", "stateId": "s0", "labelIds": []}, RULE, True),  # labelled while moved
    ({"updatedAt": "t", "description": ""}, RULE, True),
    ({"updatedAt": "t"}, RULE, True),
    (None, RULE, True),  # nothing said about what changed: a change
    ({"updatedAt": "t", "stateId": "s0"}, TriggerRule(label=None, states=("Todo",)), True),  # the move is the trigger
])
def test_an_update_that_only_moves_the_state_starts_nothing(updated_from: Any, rule: TriggerRule,
                                                           triggered: bool) -> None:
    # Each move bumps updatedAt; taken for a ticket change, a late copy of one
    # would start a new attempt once the run has ended.
    payload = linear_issue(ISSUE_ID, "ACME-1", state="Todo")
    if updated_from is not None:
        payload["updatedFrom"] = updated_from
    command = _map(payload, rule)
    assert isinstance(command, Intake) is triggered
    if not triggered:
        assert isinstance(command, Ignore) and command.reason == "only the workflow state changed"


def test_issue_remove_is_ignored() -> None:
    assert isinstance(_map(linear_issue(ISSUE_ID, "ACME-1", action="remove")), Ignore)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"id": None}, "data.id"),
        ({"id": "has space"}, "data.id"),
        ({"id": "x" * 300}, "data.id"),
        ({"identifier": "not a key"}, "data.identifier"),
        ({"title": ""}, "data.title"),
        ({"updatedAt": "yesterday"}, "data.updatedAt"),
        ({"updatedAt": "2025-01-01T10:00:00"}, "time zone"),
        ({"labels": "foundry"}, "data.labels"),
    ],
)
def test_malformed_issue_is_bad_payload(change: dict[str, Any], message: str) -> None:
    payload = linear_issue(ISSUE_ID, "ACME-1")
    payload["data"].update(change)
    with pytest.raises(BadPayload, match=message):
        _map(payload)


def test_snapshot_respects_the_crd_limits() -> None:
    payload = linear_issue(ISSUE_ID, "ACME-1", title="t" * 5000, labels=("foundry", *(f"l{i}" for i in range(100))))
    payload["data"]["url"] = "javascript:alert(1)"
    payload["data"]["priority"] = 9
    ticket = _map(payload).ticket  # type: ignore[union-attr]
    snapshot = ticket.snapshot()
    assert len(snapshot["title"]) == 1024
    assert len(snapshot["labels"]) == 64
    assert "url" not in snapshot and "priority" not in snapshot


@pytest.mark.parametrize(
    "body, decision, comment",
    [
        ("/foundry approve", "approve", ""),
        ("  /foundry APPROVE looks good\nthanks", "approve", "looks good\nthanks"),
        ("/foundry reject too risky", "reject", "too risky"),
        ("/foundry stop", "stop", ""),
        ("/foundry replan the ticket changed", "replan", "the ticket changed"),
    ],
)
def test_comment_commands(body: str, decision: str, comment: str) -> None:
    payload = linear_comment(ISSUE_ID, body)
    command = _map(payload)
    assert command == Decision(decision=decision, issue_id=ISSUE_ID, approver="alice@example.com", comment=comment,
                               comment_id=payload["data"]["id"])  # the operator reads that comment back


@pytest.mark.parametrize(
    "body, decision, plan_ref, comment",
    [
        ("/foundry approve 0123456789AB looks good", "approve", "0123456789ab", "looks good"),
        ("/foundry replan sha256:" + "0" * 64 + "\nplease", "replan", "sha256:" + "0" * 64, "please"),
        ("/foundry stop 0123456789ab", "stop", None, "0123456789ab"),  # stop is not about a plan
    ],
)
def test_a_comment_may_name_the_plan_it_is_about(body: str, decision: str, plan_ref: str | None, comment: str) -> None:
    command = _map(linear_comment(ISSUE_ID, body))
    assert (command.decision, command.plan_ref, command.comment) == (decision, plan_ref, comment)


@pytest.mark.parametrize("body", ["please /foundry approve", "/foundry approved", "/foundry", "/foundryapprove", "LGTM"])
def test_other_comments_are_ignored(body: str) -> None:
    assert isinstance(_map(linear_comment(ISSUE_ID, body)), Ignore)


def test_approver_is_the_user_id_when_linear_sends_no_email() -> None:
    command = _map(linear_comment(ISSUE_ID, "/foundry approve", user_id="user-7", email=None))
    assert isinstance(command, Decision) and command.approver == "user-7"


def test_comment_without_issue_or_author_is_bad_payload() -> None:
    payload = linear_comment(ISSUE_ID, "/foundry approve")
    del payload["data"]["issueId"]
    with pytest.raises(BadPayload, match="issueId"):
        _map(payload)
    payload = linear_comment(ISSUE_ID, "/foundry approve")
    for key in ("user", "userId"):
        del payload["data"][key]
    del payload["actor"]
    with pytest.raises(BadPayload, match="author"):
        _map(payload)


def test_a_command_comment_without_its_id_is_bad_payload() -> None:
    # The operator confirms a decision by reading its comment back by id; without
    # one the decision could never count (and the CRD would refuse the object).
    for bad in (None, "", "   ", "x" * 129, 7):
        payload = linear_comment(ISSUE_ID, "/foundry approve")
        if bad is None:
            del payload["data"]["id"]
        else:
            payload["data"]["id"] = bad
        with pytest.raises(BadPayload, match="data.id"):
            _map(payload)


def test_unknown_linear_types_are_ignored() -> None:
    assert isinstance(map_linear("Project", {"action": "create", "data": {}}, RULE), Ignore)


# ---------------------------------------------------------------- GitHub


def test_run_branch_names_the_run_and_is_not_mined_for_keys() -> None:
    name = run_name("linear", ISSUE_ID, 1)
    command = map_github("pull_request", github_pull_request(f"foundry/{name}", "Fix login"))
    assert command == PrHint(event="pull_request", run_names=(name,), issue_keys=(), pr_number=7)


def test_issue_keys_from_branch_then_title() -> None:
    command = map_github("pull_request", github_pull_request("alice/acme-42-fix-login", "ENG-7: and ACME-42"))
    assert isinstance(command, PrHint)
    assert command.issue_keys == ("ACME-42", "ENG-7")


def test_correlation_needs_key_boundaries() -> None:
    assert correlation(["release-2024"], ["v1-2fix", "abc-12x"]) == ((), ("RELEASE-2024",))


def test_check_events_use_head_branch_and_pull_requests() -> None:
    suite = {"action": "completed", "check_suite": {"head_branch": "acme-9-x", "pull_requests": []}}
    assert map_github("check_suite", suite).issue_keys == ("ACME-9",)  # type: ignore[union-attr]
    run = {
        "action": "completed",
        "check_run": {
            "check_suite": {"head_branch": None},
            "pull_requests": [{"number": 3, "head": {"ref": "foundry/lin-abc-1"}}],
        },
    }
    command = map_github("check_run", run)
    assert isinstance(command, PrHint) and command.run_names == ("lin-abc-1",) and command.pr_number == 3


@pytest.mark.parametrize(
    "event, payload",
    [
        ("pull_request", github_pull_request("acme-1-x", "t", action="labeled")),
        ("check_suite", {"action": "requested", "check_suite": {"head_branch": "acme-1"}}),
        ("check_run", {"action": "created", "check_run": {}}),
        ("push", {"ref": "refs/heads/acme-1"}),
        ("issue_comment", {"action": "created"}),
        ("pull_request", github_pull_request("main", "No key here")),
    ],
)
def test_uninteresting_or_uncorrelated_github_events_are_ignored(event: str, payload: dict[str, Any]) -> None:
    assert isinstance(map_github(event, payload), Ignore)


def test_ping() -> None:
    assert isinstance(map_github("ping", {"zen": "Keep it logically awesome."}), Ping)


def test_pull_request_that_is_not_an_object_is_bad_payload() -> None:
    with pytest.raises(BadPayload, match="pull_request"):
        map_github("pull_request", {"action": "opened", "pull_request": "7"})


# ---------------------------------------------------------------- fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(["id", "identifier", "title", "updatedAt", "labels", "state", "team", "body", "issueId",
                         "user", "userId", "priority", "description", "url", "pull_request", "head", "ref",
                         "check_suite", "check_run", "pull_requests", "head_branch", "number", "action"])
_shaped = st.recursive(
    _json, lambda children: st.dictionaries(_keys, children, max_size=6), max_leaves=30
)


@settings(max_examples=120, deadline=None)
@given(
    event=st.sampled_from(["Issue", "Comment", "Project", "x"]),
    action=st.sampled_from(["create", "update", "remove"]),
    data=st.dictionaries(_keys, _shaped, max_size=8),
    actor=_shaped,
)
def test_linear_mapping_is_total(event: str, action: str, data: dict[str, Any], actor: Any) -> None:
    try:
        map_linear(event, {"type": event, "action": action, "data": data, "actor": actor}, RULE)
    except BadPayload:
        pass


@settings(max_examples=120, deadline=None)
@given(
    event=st.sampled_from(["pull_request", "pull_request_review", "check_suite", "check_run", "ping", "push"]),
    payload=st.dictionaries(_keys, _shaped, max_size=6),
)
def test_github_mapping_is_total(event: str, payload: dict[str, Any]) -> None:
    try:
        map_github(event, payload)
    except BadPayload:
        pass
