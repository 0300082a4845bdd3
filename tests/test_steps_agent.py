"""The dispatch and agent steps, called directly (foundry.operator.reconcile.steps_agent):
Approved → AgentRunning | Blocked, AgentRunning → a retry | PROpen | Blocked | ExecutionFailed."""

from __future__ import annotations

from foundry.agents.provider import OOM_KILLED, POD_REFUSED
from foundry.domain.phases import Phase
from foundry.operator.reconcile import steps_agent
from foundry.operator.reconcile.outcome import Stay, Transition
from foundry.operator.reconcile.view import RunView
from tests.support.step_deps import NOW, REPO, StepDeps, agent_running, approved, with_attempt

RUN = "linear-acme-1-a1"


def _running(deps: StepDeps, attempt: int = 1) -> RunView:
    """AgentRunning at `attempt`, that attempt started at the provider and recorded."""
    run = agent_running(jobs=[], attempt=attempt)
    for n in range(1, attempt + 1):
        run = with_attempt(deps, run, n)
    return run


def test_an_approved_run_starts_attempt_one_with_its_plan():
    deps = StepDeps()
    outcome = steps_agent.dispatch(deps, approved())
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.AGENT_RUNNING, "AgentStarted")
    assert deps.agents.dispatched == [(RUN, 1)]
    told = deps.agents.inputs[(RUN, 1)]
    assert (told["repo"], told["branch"], told["attempt"]) == (REPO, f"foundry/{RUN}", 1)
    assert told["plan"] == approved().status["plan"] and "pr" not in told
    assert outcome.status["agent"]["attempt"] == 1
    assert [j["name"] for j in outcome.status["agent"]["jobs"]] == [f"{RUN}-a1"]


def test_dispatch_replayed_adopts_the_attempt_it_started():
    deps = StepDeps()
    first = steps_agent.dispatch(deps, approved())
    again = steps_agent.dispatch(deps, approved())
    assert first.status["agent"] == again.status["agent"]
    assert len(deps.agents.attempts) == 1


def test_without_the_approvals_the_gate_denies_and_nothing_starts():
    deps = StepDeps()
    run = approved(approvals={"required": 1, "received": 0, "summary": "0/1", "approvers": []})
    outcome = steps_agent.dispatch(deps, run)
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.BLOCKED, "PolicyDenied", True)
    assert "approval" in outcome.message
    assert deps.agents.dispatched == []


def test_open_questions_deny_the_start_too():
    deps = StepDeps()
    outcome = steps_agent.dispatch(deps, approved(questions=["What should change?"]))
    assert outcome.to == Phase.BLOCKED and "not ready" in outcome.message
    assert deps.agents.dispatched == []


def test_an_agent_at_work_without_a_pr_leaves_the_run_as_it_is():
    deps = StepDeps()
    assert steps_agent.watch_agent(deps, _running(deps)) == Stay()
    assert deps.agents.dispatched == [] and deps.linear.created == []


def test_a_failed_attempt_is_retried_within_the_caps():
    deps = StepDeps()
    run = _running(deps)
    deps.agents.finish(run, 1, "failed", outcome="failed", reason="tests failed")
    outcome = steps_agent.watch_agent(deps, run)
    assert isinstance(outcome, Stay)
    assert deps.agents.dispatched == [(RUN, 2)]
    assert outcome.status["agent"]["attempt"] == 2
    assert [j["state"] for j in outcome.status["agent"]["jobs"]] == ["failed", "running"]
    assert outcome.audit == "agent-retry" and outcome.audit_detail["failed_attempt"] == 1
    assert "attempt 1 failed: tests failed; retrying as attempt 2" == outcome.status["message"]


def test_the_last_allowed_attempt_failing_ends_the_run_with_one_blocked_comment():
    deps = StepDeps()
    run = _running(deps, attempt=3)  # retry cap 2: attempt 4 would be retry 3
    deps.agents.finish(run, 3, "failed", outcome="no-changes")
    outcome = steps_agent.watch_agent(deps, run)
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.EXECUTION_FAILED, "AgentFailed")
    assert "attempt 3 made no changes" in outcome.message and "retry cap" in outcome.message
    assert deps.agents.dispatched == []
    assert deps.linear.purposes() == ["blocked"]


def test_the_cluster_killing_the_last_attempt_names_the_cause():
    deps = StepDeps()
    run = _running(deps, attempt=3)
    deps.agents.finish(run, 3, "failed", cause=OOM_KILLED, reason="OOMKilled")
    assert steps_agent.watch_agent(deps, run).reason == "AgentOOMKilled"


def test_a_pod_the_cluster_refused_is_not_retried():
    deps = StepDeps()
    run = _running(deps)
    deps.agents.finish(run, 1, "failed", reason=POD_REFUSED, message="admission webhook denied the pod")
    outcome = steps_agent.watch_agent(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.EXECUTION_FAILED, "AgentPodRefused")
    assert "admission webhook denied the pod" in outcome.message
    assert deps.agents.dispatched == [] and deps.agents.cancelled == [(RUN, 1)]


def test_a_change_refused_before_push_blocks_the_run():
    deps = StepDeps()
    run = _running(deps)
    deps.agents.finish(run, 1, "succeeded", outcome="refused", reason="touched .github/workflows/ci.yml")
    outcome = steps_agent.watch_agent(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.BLOCKED, "ChangeRefused")
    assert ".github/workflows/ci.yml" in outcome.message
    assert deps.agents.dispatched == [] and deps.linear.purposes() == ["blocked"]


def test_a_finished_attempt_waits_for_its_pr_then_fails_without_one():
    deps = StepDeps()
    run = _running(deps)
    deps.agents.finish(run, 1, "succeeded", finished=NOW, outcome="pushed")
    deps.later(seconds=deps.config.timeouts.pr_wait_seconds - 1)
    waiting = steps_agent.watch_agent(deps, run)
    assert isinstance(waiting, Stay) and waiting.status["agent"]["jobs"][0]["state"] == "succeeded"
    deps.later(seconds=2)
    outcome = steps_agent.watch_agent(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.EXECUTION_FAILED, "NoPullRequest")


def test_foundrys_pr_on_the_branch_is_judged():
    deps = StepDeps()
    run = _running(deps)
    pull = deps.github.open_pull(run)
    deps.github.check(pull["head"]["sha"], "ci", "success")
    outcome = steps_agent.watch_agent(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.PR_OPEN, "PROpened")
    assert outcome.status["pr"]["number"] == 7 and outcome.status["pr"]["checks"] == "success"
    assert deps.linear.purposes() == ["pr_opened"]


def test_someone_elses_pr_on_the_branch_is_not_adopted_and_is_told_once():
    deps = StepDeps()
    run = _running(deps)
    deps.github.open_pull(run, opener="mallory")
    assert steps_agent.watch_agent(deps, run) == Stay()
    assert steps_agent.watch_agent(deps, run) == Stay()
    assert deps.api.event_reasons() == ["PullRequestNotAdopted"]
    assert deps.linear.purposes() == ["pr_not_adopted.pr-7"]


def test_a_head_not_pushed_by_the_runner_is_not_adopted():
    deps = StepDeps()
    run = _running(deps)
    deps.github.open_pull(run, author="Mallory")  # opened by Foundry's login, but the head is not the runner's
    assert steps_agent.watch_agent(deps, run) == Stay()
    assert "not pushed by Foundry's runner" in deps.api.events[0]["message"]


def test_a_late_attempt_still_running_past_the_pr_wait_is_not_failed():
    deps = StepDeps()
    run = _running(deps)
    deps.later(seconds=deps.config.timeouts.pr_wait_seconds * 10)
    # A running attempt is bounded by its Job's deadline, not by the PR wait.
    assert steps_agent.watch_agent(deps, run) == Stay()
    assert deps.linear.created == []
