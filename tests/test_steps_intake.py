"""The intake and analysis steps, called directly (foundry.operator.reconcile.steps_intake):
Pending → Analysing | Duplicate, Analysing → NeedsClarification | Blocked | WaitingApproval."""

from __future__ import annotations

from foundry.db import audit, claims
from foundry.domain.phases import Phase
from foundry.operator.reconcile import steps_intake
from foundry.operator.reconcile.outcome import Transition
from foundry.operator.reconcile.view import RunView
from tests.support.step_deps import READY_TICKET, StepDeps, run_view


def _decisions(deps: StepDeps, name: str) -> list[str]:
    row = claims.get_run(deps.engine, "ns", name)
    return [e.kind for e in audit.audit_events(deps.engine, row.id)] if row is not None else []


def _analysing(ticket: dict | None = None, **status) -> RunView:
    return run_view("Analysing", ticket=ticket, **status)


def test_a_new_run_is_claimed_in_the_database_first():
    deps = StepDeps()
    outcome = steps_intake.claim(deps, run_view())
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.ANALYSING, "Claimed")
    row = claims.get_run(deps.engine, "ns", "linear-acme-1-a1")
    assert row is not None and row.issue_id == "issue-1"


def test_a_claim_replayed_after_a_crash_keeps_the_one_row():
    deps = StepDeps()
    steps_intake.claim(deps, run_view())
    again = steps_intake.claim(deps, run_view())
    assert again.to == Phase.ANALYSING
    assert [r.name for r in claims.runs_of_issue(deps.engine, "linear", "issue-1")] == ["linear-acme-1-a1"]


def test_a_second_run_of_the_issue_is_a_duplicate_audited_on_the_first():
    deps = StepDeps()
    steps_intake.claim(deps, run_view())
    outcome = steps_intake.claim(deps, run_view(name="by-hand"))
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.DUPLICATE, "ActiveRunExists", True)
    assert "ns/linear-acme-1-a1" in outcome.message
    assert claims.get_run(deps.engine, "ns", "by-hand") is None  # the duplicate never holds a row
    assert "duplicate-refused" in _decisions(deps, "linear-acme-1-a1")


def test_a_ready_ticket_gets_a_plan_and_one_approval_request():
    deps = StepDeps()
    outcome = steps_intake.analyse(deps, _analysing())
    assert (outcome.to, outcome.reason) == (Phase.WAITING_APPROVAL, "Planned")
    assert outcome.status["repo"] == "app" and outcome.status["riskAreas"] == []
    assert outcome.status["approvals"] == {"required": 1, "received": 0, "summary": "0/1", "approvers": []}
    assert deps.linear.purposes() == ["approval_request"]
    assert outcome.status["comments"] == {"approval_request": deps.linear.created[0].id}


def test_a_risky_ticket_needs_an_approver_who_covers_the_area():
    deps = StepDeps()
    ticket = {**READY_TICKET, "title": "Add a health endpoint behind the login session token check"}
    outcome = steps_intake.analyse(deps, _analysing(ticket))
    assert outcome.to == Phase.WAITING_APPROVAL
    assert outcome.status["riskAreas"] == ["auth"]
    assert "covering auth" in outcome.message
    body = deps.linear.created[0].body
    assert "Alice" in body and "Bob" not in body  # only the security role may approve auth


def test_a_ticket_without_acceptance_criteria_gets_questions_not_a_plan():
    deps = StepDeps()
    ticket = {**READY_TICKET, "description": READY_TICKET["description"].split("## Acceptance")[0]}
    outcome = steps_intake.analyse(deps, _analysing(ticket))
    assert (outcome.to, outcome.reason) == (Phase.NEEDS_CLARIFICATION, "MissingInformation")
    assert len(outcome.status["questions"]) == 1 and "Acceptance criteria" in outcome.status["questions"][0]
    assert deps.linear.purposes() == ["clarification"]
    assert "plan" not in outcome.status


def test_a_ticket_no_repository_fits_ends_blocked_and_says_why():
    deps = StepDeps()
    ticket = {**READY_TICKET, "labels": ["foundry", "repo:elsewhere"]}
    outcome = steps_intake.analyse(deps, _analysing(ticket))
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.BLOCKED, "NoRepository", True)
    assert "repo:elsewhere" in outcome.message
    assert deps.linear.purposes() == ["blocked"]
    assert outcome.message in deps.linear.created[0].body


def test_analysis_replayed_posts_no_second_comment():
    deps = StepDeps()
    first = steps_intake.analyse(deps, _analysing())
    # Replayed after the status write (the id recorded), and after a crash before it (only the marker).
    recorded = steps_intake.analyse(deps, _analysing(comments=first.status["comments"]))
    found = steps_intake.analyse(deps, _analysing())
    assert recorded.status["comments"] == found.status["comments"] == first.status["comments"]
    assert deps.linear.purposes() == ["approval_request"]


def test_a_marker_pasted_by_someone_else_does_not_silence_the_request():
    deps = StepDeps()
    run = _analysing()
    deps.linear.add("issue-1", f"copied <!-- foundry:run={run.name};purpose=approval_request -->", user_id="mallory")
    outcome = steps_intake.analyse(deps, run)
    assert deps.linear.purposes() == ["approval_request"]
    assert outcome.status["comments"]["approval_request"] == deps.linear.created[0].id
