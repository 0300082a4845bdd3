"""The sweep's pure parts: what a node means, the filters it sends, and the operator's GitHub resync coverage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from foundry.bridge.mapping import Decision, Ignore, Intake, TriggerRule
from foundry.domain.phases import ACTIVE_PHASE_NAMES, Phase
from foundry.linear_sweep import queries
from foundry.linear_sweep.decide import LastRun, NeedsHistory, changed_since, decision_command, issue_command
from foundry.operator.reconcile.timing import next_wake

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def _node(**over) -> dict:
    node = {"id": "8f1c2b9e-1111-4a4a-9b9b-000000000001", "identifier": "ACME-7", "title": "Add a health endpoint",
            "description": "GET /healthz", "url": "https://linear.app/acme/issue/ACME-7/x",
            "updatedAt": "2026-01-05T10:00:00.000Z", "priority": 2.0,
            "state": {"id": "s1", "name": "Todo", "type": "unstarted"}, "team": {"id": "t1", "key": "ACME"},
            "labels": {"nodes": [{"id": "l1", "name": "Foundry"}]}}
    node.update(over)
    return node


def test_a_node_nobody_ran_is_an_intake_with_the_webhook_shapes_fields():
    command = issue_command(_node(), TriggerRule(), None)
    assert isinstance(command, Intake)
    assert command.ticket.priority == 2 and command.ticket.labels == ("Foundry",) and command.ticket.team_key == "ACME"


def test_what_a_webhook_would_ignore_the_sweep_ignores():
    assert isinstance(issue_command(_node(labels={"nodes": []}), TriggerRule(), None), Ignore)
    done = _node(state={"id": "s9", "name": "Done", "type": "completed"})
    assert isinstance(issue_command(done, TriggerRule(), None), Ignore)


def test_an_active_or_unchanged_run_stops_the_intake_and_a_newer_ticket_asks_the_history():
    assert issue_command(_node(), TriggerRule(), LastRun("WaitingApproval", T0 - timedelta(hours=1))) \
        == Ignore("a run is active")
    assert isinstance(issue_command(_node(), TriggerRule(), LastRun("Blocked", T0)), Ignore)
    newer = issue_command(_node(), TriggerRule(), LastRun("Blocked", T0 - timedelta(minutes=5)))
    assert isinstance(newer, NeedsHistory) and newer.after == T0 - timedelta(minutes=5)
    # With trigger states, every update counts (as for a webhook): no history needed.
    states = TriggerRule(label=None, states=("Todo",))
    assert isinstance(issue_command(_node(), states, LastRun("Blocked", T0 - timedelta(minutes=5))), Intake)


def test_history_tells_a_state_move_from_a_change():
    after = T0
    moved = {"createdAt": "2026-01-05T10:01:00.000Z", "fromStateId": "a", "toStateId": "b"}
    edited = {"createdAt": "2026-01-05T10:02:00.000Z", "updatedDescription": True}
    relabelled = {"createdAt": "2026-01-05T10:02:00.000Z", "addedLabelIds": ["l1"]}
    unknown = {"createdAt": "2026-01-05T10:02:00.000Z"}  # e.g. an assignee: a webhook would count it too
    old_edit = {"createdAt": "2026-01-05T09:59:00.000Z", "updatedDescription": True}
    assert not changed_since([moved, old_edit], after)
    assert changed_since([moved, edited], after)
    assert changed_since([relabelled], after)
    assert changed_since([unknown], after)


def test_a_comment_counts_only_for_a_run_older_than_it_and_carries_its_id():
    node = {"id": "c-1", "body": "  /foundry approve ship it", "createdAt": "2026-01-05T10:00:05.000Z",
            "issue": {"id": "8f1c2b9e-1111-4a4a-9b9b-000000000001"},
            "user": {"id": "u-alice", "name": "Alice", "email": "alice@example.com"}}
    decision = decision_command(node, TriggerRule(), T0)
    assert isinstance(decision, Decision)
    assert (decision.decision, decision.approver, decision.comment, decision.comment_id) == (
        "approve", "alice@example.com", "ship it", "c-1")
    assert isinstance(decision_command(node, TriggerRule(), T0 + timedelta(seconds=6)), Ignore)
    assert isinstance(decision_command(node, TriggerRule(), None), Ignore)
    chatter = dict(node, body="thanks!")
    assert isinstance(decision_command(chatter, TriggerRule(), T0), Ignore)


def test_the_issue_filter_names_the_trigger_and_the_cursor():
    flt = queries.issue_filter(TriggerRule(), T0, team="ACME")
    assert flt == {"updatedAt": {"gte": "2026-01-05T10:00:00.000Z"},
                   "state": {"type": {"nin": ["canceled", "completed"]}},
                   "labels": {"some": {"name": {"eqIgnoreCase": "foundry"}}},
                   "team": {"key": {"eq": "ACME"}}}
    states = queries.issue_filter(TriggerRule(label=None, states=("Ready", "Todo")), T0)
    assert states["or"] == [{"state": {"name": {"eqIgnoreCase": "Ready"}}},
                            {"state": {"name": {"eqIgnoreCase": "Todo"}}}]
    assert "labels" not in states


# ---------------------------------------------------------------- GitHub has no redelivery either

# Phases in which the run waits for something only GitHub says: the agent's PR to appear,
# its checks, reviews and merge. A lost GitHub webhook must never strand one of them.
WAITING_ON_GITHUB = {Phase.AGENT_RUNNING, Phase.PR_OPEN, Phase.REVIEW_REQUIRED}


@pytest.mark.parametrize("phase", sorted(WAITING_ON_GITHUB, key=lambda p: p.value), ids=lambda p: p.value)
def test_every_run_waiting_on_github_is_re_read_every_resync_period(phase):
    from foundry.operator.runview import seen

    cfg = SimpleNamespace(timeouts=SimpleNamespace(resync_seconds=7, approval_seconds=100))
    known = seen({"metadata": {"resourceVersion": "1"}, "status": {"phase": phase.value}})
    assert phase.value in ACTIVE_PHASE_NAMES and known.active  # the controller keeps a wake for it
    assert next_wake({"status": {"phase": phase.value}}, cfg, T0) == 7
