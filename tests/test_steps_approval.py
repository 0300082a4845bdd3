"""The approval step, called directly (foundry.operator.reconcile.steps_approval):
WaitingApproval → Approved | Expired, and which decisions count."""

from __future__ import annotations

from datetime import timedelta

from foundry.domain.phases import Phase
from foundry.operator.reconcile import passcache, steps_approval
from foundry.operator.reconcile.outcome import Stay, Transition
from foundry.operator.reconcile.view import RunView
from tests.support.step_deps import NOW, StepDeps, waiting

PLANNED = NOW - timedelta(minutes=10)


def _with(run: RunView, **status) -> RunView:
    return RunView({**run.body, "status": {**run.status, **status}})


def test_no_approval_yet_records_the_count_once():
    deps = StepDeps()
    first = steps_approval.await_approvals(deps, waiting())
    assert isinstance(first, Stay) and first.status["message"] == "0/1 approvals"
    # The same count seen again writes nothing.
    assert steps_approval.await_approvals(deps, _with(waiting(), **first.status)) == Stay()


def test_an_approver_after_the_plan_approves_it():
    deps = StepDeps()
    run = waiting(PLANNED)
    deps.api.approve(run, "alice", made=PLANNED + timedelta(minutes=1))
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.APPROVED, "ApprovalsSatisfied")
    assert outcome.status["approvals"]["summary"] == "1/1"
    assert [a["name"] for a in outcome.status["approvals"]["approvers"]] == ["Alice"]


def test_an_approval_older_than_the_plan_does_not_count_and_is_told_once():
    deps = StepDeps()
    run = waiting(PLANNED)
    deps.api.approve(run, "alice", made=PLANNED - timedelta(seconds=5))  # a plan replaced since
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Stay)
    assert outcome.status["approvals"]["received"] == 0
    assert "before the plan it approves existed" in outcome.status["message"]
    assert deps.api.event_reasons() == ["DecisionRefused"]
    assert deps.linear.purposes() == [f"refused.{deps.api.approvals[0]['metadata']['name']}"]
    assert outcome.audit == "approvals-seen"
    # Told once: the next look at the same refusal posts nothing more.
    again = steps_approval.await_approvals(deps, _with(run, **outcome.status))
    assert isinstance(again, Stay) and "comments" not in again.status
    assert len(deps.linear.created) == 1 and len(deps.api.events) == 1


def test_someone_who_is_not_an_approver_does_not_count():
    deps = StepDeps()
    run = waiting(PLANNED)
    deps.api.approve(run, "mallory", made=NOW)
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Stay) and outcome.status["approvals"]["received"] == 0
    assert "mallory" in outcome.status["message"]


def test_a_risk_area_needs_an_approver_with_its_role():
    deps = StepDeps()
    run = waiting(PLANNED, riskAreas=["auth"])
    deps.api.approve(run, "bob", made=NOW)  # dev: not the security role auth needs
    assert isinstance(steps_approval.await_approvals(deps, run), Stay)
    deps.api.approve(run, "alice", made=NOW)
    with passcache.one_pass():
        outcome = steps_approval.await_approvals(deps, run)
    assert outcome.to == Phase.APPROVED
    assert [a["name"] for a in outcome.status["approvals"]["approvers"]] == ["Alice"]


def test_the_plan_expires_at_its_deadline_and_a_later_approval_cannot_revive_it():
    deps = StepDeps()
    run = waiting(PLANNED)
    deadline = PLANNED + timedelta(seconds=deps.config.timeouts.approval_seconds)
    deps.later(seconds=(deadline - NOW).total_seconds() + 5)
    deps.api.approve(run, "alice", made=deadline + timedelta(seconds=1))
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.EXPIRED, "ApprovalExpired", True)
    assert outcome.status["approvals"]["received"] == 0


def test_an_approval_by_the_deadline_still_counts_when_seen_late():
    deps = StepDeps()
    run = waiting(PLANNED)
    deadline = steps_approval.expires_at(deps, run)
    deps.api.approve(run, "alice", made=deadline - timedelta(seconds=1))
    deps.later(hours=5)  # the operator was down past the deadline
    assert steps_approval.await_approvals(deps, run).to == Phase.APPROVED


def _linear_approval(deps: StepDeps, run: RunView, *, body: str = "/foundry approve", issue: str = "issue-1",
                     author: str = "alice@example.com"):
    comment = deps.linear.add(issue, body, user_id="user-alice", user_email=author, made=NOW)
    return deps.api.approve(run, "alice@example.com", source="linear", commentId=comment.id, made=NOW)


def test_a_linear_approval_counts_once_linear_confirms_its_comment():
    deps = StepDeps()
    run = waiting(PLANNED)
    _linear_approval(deps, run)
    outcome = steps_approval.await_approvals(deps, run)
    assert outcome.to == Phase.APPROVED


def test_a_linear_approval_without_its_comment_does_not_count():
    deps = StepDeps()
    run = waiting(PLANNED)
    deps.api.approve(run, "alice@example.com", source="linear", commentId="c-gone", made=NOW)
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Stay)
    assert "Linear has no comment c-gone" in outcome.status["message"]


def test_a_linear_approval_whose_comment_says_something_else_does_not_count():
    deps = StepDeps()
    run = waiting(PLANNED)
    _linear_approval(deps, run, body="/foundry stop")
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Stay) and "does not say `/foundry approve`" in outcome.status["message"]


def test_a_linear_approval_from_a_comment_on_another_issue_does_not_count():
    deps = StepDeps()
    run = waiting(PLANNED)
    _linear_approval(deps, run, issue="issue-2")
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Stay) and "is not on this issue" in outcome.status["message"]


def test_refusals_told_on_the_ticket_are_bounded():
    deps = StepDeps()
    run = waiting(PLANNED)
    for n in range(steps_approval.MAX_REFUSAL_COMMENTS + 3):
        deps.api.approve(run, f"stranger{n}", made=NOW)
    outcome = steps_approval.await_approvals(deps, run)
    assert len(deps.linear.created) == steps_approval.MAX_REFUSAL_COMMENTS
    assert len(outcome.status["comments"]) == steps_approval.MAX_REFUSAL_COMMENTS
    # Past the bound, the status still says who did not count.
    assert all(f"stranger{n}:" in outcome.status["message"] for n in range(steps_approval.MAX_REFUSAL_COMMENTS + 3))
