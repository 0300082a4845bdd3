"""Plans written by the agent, approvals bound to a plan's hash, re-plans, and the apply guard, called as
steps (foundry.operator.reconcile: steps_plan, steps_approval, agentio). The real plan Job, the real CLIs and
the real operator are proven in tests/test_operator_plan_job.py and on the real node."""

from __future__ import annotations

from datetime import timedelta

import pytest

from foundry.domain import plan_status, plans
from foundry.domain.phases import Phase
from foundry.operator.errors import CannotReconcile
from foundry.operator.reconcile import agentio, steps_agent, steps_approval, steps_endings, steps_intake
from foundry.operator.reconcile.outcome import Stay, Transition
from foundry.operator.reconcile.view import RunView
from tests.support.step_deps import NOW, PLAN, READY_TICKET, StepDeps, approved, config, iso, run_view, waiting

AGENT_PLAN = {
    "summary": "Add GET /healthz answering 200 once the app is ready.",
    "files": [{"path": "app/health.py", "why": "the new endpoint"},
              {"path": "tests/test_health.py", "why": "a test for it"}],
    "approach": "A small handler registered next to the other routes.",
    "tests": ["tests/test_health.py: GET /healthz is 200"],
    "risks": ["none beyond the new route"],
    "openQuestions": [],
}


def agent_deps(**policy) -> StepDeps:
    return StepDeps(config=config(plan_mode="agent", **policy))


def analysing(**status) -> RunView:
    return run_view("Analysing", **status)


def after(run: RunView, outcome) -> RunView:
    """The run as the status write would leave it (merge patch: null deletes)."""
    status = dict(run.status)
    for key, value in outcome.status.items():
        if isinstance(value, dict) and isinstance(status.get(key), dict):
            merged = {**status[key], **value}
            status[key] = {k: v for k, v in merged.items() if v is not None}
        elif value is None:
            status.pop(key, None)
        else:
            status[key] = value
    if isinstance(outcome, Transition):
        status["phase"] = outcome.to.value
        if outcome.to == Phase.WAITING_APPROVAL:
            status["conditions"] = [{"type": "Approved", "status": "False", "lastTransitionTime": iso(NOW)}]
    return RunView({**run.body, "status": status})


def planned(deps: StepDeps, plan: dict = AGENT_PLAN, run: RunView | None = None) -> tuple[RunView, Transition]:
    run = run or analysing()
    started = steps_intake.analyse(deps, run)
    assert isinstance(started, Stay)
    run = after(run, started)
    number = run.status["planJob"]["number"]
    deps.agents.finish_plan(run, number, plan)
    outcome = steps_intake.analyse(deps, run)
    assert isinstance(outcome, Transition)
    return after(run, outcome), outcome


# --- the plan Job --------------------------------------------------------------------------------


def test_an_agent_plan_starts_a_read_only_plan_job_and_waits_for_it():
    deps = agent_deps()
    outcome = steps_intake.analyse(deps, analysing())
    assert isinstance(outcome, Stay)
    assert outcome.status["planJob"]["name"] == "linear-acme-1-a1-p1"
    assert outcome.status["planJob"]["state"] == "running"
    assert outcome.status["planJob"]["ticketHash"] == plan_status.ticket_hash(READY_TICKET)
    given = deps.agents.plan_inputs[("linear-acme-1-a1", 1)]
    assert given["mode"] == "plan" and "planHash" not in given and given["planText"] == ""
    assert deps.linear.comments == {} or not any(deps.linear.comments.values())  # nothing posted yet
    assert deps.agents.dispatched == []  # no apply attempt


def test_a_replayed_analysis_adopts_the_plan_job_instead_of_starting_another():
    deps = agent_deps()
    run = after(analysing(), steps_intake.analyse(deps, analysing()))
    again = steps_intake.analyse(deps, run)
    assert again == Stay()  # still running, nothing new to write
    lost = steps_intake.analyse(deps, analysing())  # the first status write was lost: the same Job is adopted
    assert lost.status["planJob"]["name"] == "linear-acme-1-a1-p1"
    assert len(deps.agents.plans) == 1


def test_the_agents_plan_is_posted_with_its_hash_and_waits_for_approval():
    deps = agent_deps()
    run, outcome = planned(deps)
    made = plans.validate(AGENT_PLAN)
    assert (outcome.to, outcome.reason) == (Phase.WAITING_APPROVAL, "Planned")
    plan = run.status["plan"]
    assert plan["source"] == "agent" and plan["revision"] == 1 and plan["hash"] == plans.plan_hash(made)
    assert plan["files"] == ["app/health.py", "tests/test_health.py"] and plan["agent"] == made.as_dict()
    assert plan_status.verified_hash(plan) == plan["hash"]
    body = deps.linear.created[-1].body
    assert plan["hash"] in body and "### Approach" in body and "app/health.py" in body
    assert run.status["planJob"]["state"] == "succeeded"


def test_a_plan_that_names_a_migration_needs_the_migrations_role_though_the_ticket_says_nothing_risky():
    deps = agent_deps(roles_required={"migrations": ["lead"]})
    risky = {**AGENT_PLAN, "files": [{"path": "migrations/0003.sql", "why": "the new column"}]}
    run, outcome = planned(deps, risky)
    assert run.status["riskAreas"] == ["migrations"]
    assert "migrations" in outcome.message
    # Bob (dev) approves: he lacks lead, so the plan still waits.
    deps.api.approve(run, "bob", planHash=run.status["plan"]["hash"], made=NOW + timedelta(seconds=5))
    deps.later(seconds=10)
    result = steps_approval.await_approvals(deps, run)
    assert isinstance(result, Stay) and "lead" in (result.status.get("message") or "")


def test_a_plan_with_open_questions_asks_them_on_the_ticket():
    deps = agent_deps()
    asking = {**AGENT_PLAN, "files": [], "openQuestions": ["Which port does the probe use?"]}
    run, outcome = planned(deps, asking)
    assert (outcome.to, outcome.reason) == (Phase.NEEDS_CLARIFICATION, "PlanNeedsAnswers")
    assert run.status["questions"] == ["Which port does the probe use?"]
    assert "Which port does the probe use?" in deps.linear.created[-1].body


@pytest.mark.parametrize("fields, reason, says", [
    ({"state": "failed", "reason": "PlanInvalid", "message": "plan.files[0].path must be relative"},
     "PlanFailed", "plan.files[0].path must be relative"),
    ({"state": "failed", "reason": "DeadlineExceeded", "cause": "DeadlineExceeded"},
     "PlanDeadlineExceeded", "deadline of 900 s"),
    ({"state": "missing"}, "PlanFailed", "disappeared"),
])
def test_a_plan_job_that_fails_or_times_out_ends_the_run_with_the_reason(fields, reason, says):
    deps = agent_deps()
    run = after(analysing(), steps_intake.analyse(deps, analysing()))
    if fields["state"] == "missing":
        deps.agents.plans.clear()
    else:
        deps.agents.finish_plan(run, 1, None, **fields)
    outcome = steps_intake.analyse(deps, run)
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.EXECUTION_FAILED, reason, True)
    assert says in outcome.message and says in deps.linear.created[-1].body
    assert deps.agents.dispatched == []


def test_a_stop_while_the_agent_plans_cancels_the_plan_job():
    deps = agent_deps()
    run = after(analysing(), steps_intake.analyse(deps, analysing()))
    deps.api.approve(run, "alice", decision="stop")
    outcome = steps_endings.interrupt(deps, run)
    assert outcome.to == Phase.STOPPED
    assert deps.agents.plans_cancelled == [("linear-acme-1-a1", 1)]
    assert outcome.status["planJob"]["state"] == "cancelled"


# --- approvals bind to the hash ------------------------------------------------------------------


def test_an_approval_counts_only_for_the_plan_hash_it_names_and_a_mismatch_is_told():
    deps = StepDeps()
    run = waiting()
    old = "sha256:" + "0" * 64
    deps.api.approve(run, "alice", planHash=old)
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Stay) and outcome.status["approvals"]["received"] == 0
    assert plan_status.short(old) in deps.linear.created[-1].body  # the approver is told why
    deps.api.approvals.clear()
    deps.api.approve(run, "alice", planHash=PLAN["hash"])
    outcome = steps_approval.await_approvals(deps, run)
    assert outcome.to == Phase.APPROVED and outcome.status["approvals"]["planHash"] == PLAN["hash"]


def test_an_unstamped_approval_counts_for_a_first_plan_but_not_after_a_replan():
    deps = StepDeps()
    deps.api.approve(waiting(), "alice")
    assert steps_approval.await_approvals(deps, waiting()).to == Phase.APPROVED
    second = waiting(plan={**PLAN, "revision": 2})
    outcome = steps_approval.await_approvals(deps, second)
    assert isinstance(outcome, Stay) and outcome.status["approvals"]["received"] == 0
    assert "re-planned" in outcome.status["message"]


def test_approve_a_then_change_the_ticket_and_plan_b_needs_its_own_approval():
    deps = agent_deps(approvals_required=2)
    run, _ = planned(deps)
    plan_a = run.status["plan"]["hash"]
    deps.api.approve(run, "alice", planHash=plan_a, made=NOW + timedelta(seconds=1))
    deps.later(seconds=2)
    assert steps_approval.await_approvals(deps, run).status["approvals"]["received"] == 1
    changed = {**READY_TICKET, "description": READY_TICKET["description"] + "\nAlso answer HEAD /healthz.\n"}
    run = RunView({**run.body, "spec": {**run.body["spec"], "ticket": changed}})
    outcome = steps_approval.await_approvals(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.ANALYSING, "Replanning")
    assert "the ticket changed" in outcome.message
    assert plan_status.short(plan_a) in deps.linear.created[-1].body  # approvers told A's approvals lapse
    run = after(run, outcome)
    plan_b_json = {**AGENT_PLAN, "tests": [*AGENT_PLAN["tests"], "HEAD /healthz is 200"]}
    run, outcome = planned(deps, plan_b_json, run)
    plan_b = run.status["plan"]
    assert outcome.to == Phase.WAITING_APPROVAL and plan_b["revision"] == 2 and plan_b["hash"] != plan_a
    assert run.status["planJob"]["name"] == "linear-acme-1-a1-p2"
    assert "linear-acme-1-a1-p2" in deps.agents.plans[("linear-acme-1-a1", 2)]["name"]
    deps.later(seconds=5)
    # A's approval does not count for B; Bob's approval of B does, and Alice's of B makes two.
    result = steps_approval.await_approvals(deps, run)
    assert result.status["approvals"]["received"] == 0
    deps.api.approve(run, "bob", planHash=plan_b["hash"], made=deps.now)
    deps.api.approve(run, "carol-is-nobody", planHash=plan_b["hash"], made=deps.now)
    deps.api.approvals[0]["spec"]["planHash"] = plan_b["hash"]  # Alice approves B (a new object in life)
    deps.api.approvals[0]["metadata"]["creationTimestamp"] = iso(deps.now)
    outcome = steps_approval.await_approvals(deps, run)
    assert outcome.to == Phase.APPROVED and outcome.status["approvals"]["planHash"] == plan_b["hash"]
    # The apply attempt is told B, verbatim, with its hash.
    run = after(run, outcome)
    start = steps_agent.dispatch(deps, run)
    given = deps.agents.inputs[("linear-acme-1-a1", 1)]
    assert start.to == Phase.AGENT_RUNNING
    assert given["planHash"] == plan_b["hash"]
    assert plans.render_markdown(plans.validate(plan_b_json)).strip() in given["planText"]
    assert "HEAD /healthz is 200" in given["planText"]


@pytest.mark.parametrize("stamp", [{"planHash": PLAN["hash"]}, {}], ids=["stamped", "unstamped"])
def test_a_replan_asked_for_on_the_ticket_replaces_the_plan_once(stamp):
    deps = StepDeps()
    run = waiting(since=NOW - timedelta(minutes=10))
    deps.api.approve(run, "bob", decision="replan", **stamp)  # made in the second the next plan is posted
    outcome = steps_approval.await_approvals(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.ANALYSING, "Replanning") and "Bob" in outcome.message
    replanned = steps_intake.analyse(deps, after(run, outcome))
    assert replanned.to == Phase.WAITING_APPROVAL and replanned.status["plan"]["revision"] == 2
    second = after(after(run, outcome), replanned)
    assert isinstance(steps_approval.await_approvals(deps, second), Stay)  # that replan was spent


# --- the apply guard: every path into AgentRunning -----------------------------------------------


@pytest.mark.parametrize("status, says", [
    ({"approvals": {"required": 1, "received": 1, "summary": "1/1", "approvers": []}}, "(none)"),
    ({"approvals": {"required": 1, "received": 1, "summary": "1/1", "approvers": [],
                    "planHash": "sha256:" + "1" * 64}}, "111111111111"),
    ({"plan": {**PLAN, "steps": ["add /healthz", "and drop the users table"]}}, "is not the plan's hash"),
    ({"plan": {k: v for k, v in PLAN.items() if k != "hash"}}, "(none)"),
])
def test_no_attempt_starts_without_an_approval_of_the_plan_as_it_stands(status, says):
    deps = StepDeps()
    run = approved(**status)
    with pytest.raises(CannotReconcile) as err:
        steps_agent.dispatch(deps, run)
    assert err.value.reason == "PlanNotApproved" and says in str(err.value)
    assert deps.agents.dispatched == []


def test_a_retry_is_guarded_too():
    deps = StepDeps()
    run = approved()
    steps_agent.dispatch(deps, run)
    tampered = RunView({**run.body, "status": {**run.status, "plan": {**PLAN, "files": ["secrets/"]},
                                                "phase": "AgentRunning",
                                                "agent": {"attempt": 1, "jobs": [deps.agents.state(run.body, 1)
                                                                                 | {"attempt": 1}]}}})
    deps.agents.finish(run, 1, "failed", outcome="failed", reason="tests failed")
    tampered.status["agent"]["jobs"][0].update(state="failed", outcome="failed")
    with pytest.raises(CannotReconcile):
        steps_agent.watch_agent(deps, tampered)
    assert deps.agents.dispatched == [("linear-acme-1-a1", 1)]
    assert agentio.approved_plan(run) == PLAN["hash"]


def test_an_approval_given_before_a_replan_does_not_count_even_when_the_new_plan_hashes_the_same():
    """A re-plan of an unchanged ticket by the deterministic planner gives the same hash: the approval
    window of the new revision (status.plan.postedAt) is what refuses the approvals given before it."""
    deps = StepDeps()
    posted = NOW - timedelta(minutes=1)
    run = waiting(plan={**PLAN, "revision": 2, "postedAt": iso(posted)})
    deps.api.approve(run, "alice", planHash=PLAN["hash"], made=posted - timedelta(minutes=5))
    outcome = steps_approval.await_approvals(deps, run)
    assert isinstance(outcome, Stay) and outcome.status["approvals"]["received"] == 0
    assert "before the plan it approves existed" in outcome.status["message"]
    deps.api.approve(run, "bob", planHash=PLAN["hash"], made=posted + timedelta(seconds=5))
    deps.api.approvals[0]["metadata"]["creationTimestamp"] = iso(posted + timedelta(seconds=5))
    assert steps_approval.await_approvals(deps, run).to == Phase.APPROVED
