"""The endings that can come in any active phase, called directly
(foundry.operator.reconcile.steps_endings), the deletion (finalize), and the
driver's table of steps and its guard on terminal phases (loop)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from foundry.db import claims
from foundry.domain.phases import Phase
from foundry.operator.errors import CannotReconcile
from foundry.operator.reconcile import loop, steps_endings, steps_intake
from foundry.operator.reconcile.finalize import finalize_run
from foundry.operator.reconcile.outcome import Stay, Transition
from foundry.operator.reconcile.view import RunView
from tests.support.step_deps import NOW, StepDeps, agent_running, run_view, waiting, with_attempt

RUN = "linear-acme-1-a1"
CREATED = NOW - timedelta(hours=1)  # run_view's creation time


def _working(deps: StepDeps) -> RunView:
    return with_attempt(deps, agent_running(jobs=[]), 1)


def test_a_stop_by_an_approver_ends_the_run_and_cancels_its_agent():
    deps = StepDeps()
    run = _working(deps)
    deps.api.approve(run, "alice", decision="stop", made=NOW)
    outcome = steps_endings.interrupt(deps, run)
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.STOPPED, "StoppedByHuman")
    assert deps.agents.cancelled == [(RUN, 1)]
    assert [j["state"] for j in outcome.status["agent"]["jobs"]] == ["cancelled"]


def test_a_reject_while_waiting_rejects_the_plan():
    deps = StepDeps()
    run = waiting()
    deps.api.approve(run, "bob", decision="reject", made=NOW)
    outcome = steps_endings.interrupt(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.REJECTED, "Rejected")
    assert outcome.status == {} and deps.agents.cancelled == []  # no attempt to cancel


def test_an_approval_is_no_interrupt():
    deps = StepDeps()
    run = waiting()
    deps.api.approve(run, "alice", made=NOW)
    assert steps_endings.interrupt(deps, run) is None


def test_a_stop_by_someone_who_may_not_is_told_once_then_ignored():
    deps = StepDeps()
    run = _working(deps)
    deps.api.approve(run, "mallory", decision="stop", made=NOW)
    outcome = steps_endings.interrupt(deps, run)
    assert isinstance(outcome, Stay) and outcome.audit == "decisions-refused"
    assert "mallory" in outcome.status["message"]
    assert deps.agents.cancelled == []
    assert deps.api.event_reasons() == ["DecisionRefused"] and len(deps.linear.created) == 1
    told = RunView({**run.body, "status": {**run.status, **outcome.status}})
    assert steps_endings.interrupt(deps, told) is None
    assert len(deps.linear.created) == 1 and len(deps.api.events) == 1


def test_a_stop_older_than_the_run_does_not_count():
    deps = StepDeps()
    run = _working(deps)
    deps.api.approve(run, "alice", decision="stop", made=CREATED - timedelta(minutes=1))  # meant for an earlier run
    outcome = steps_endings.interrupt(deps, run)
    assert isinstance(outcome, Stay) and "before the run it decides on existed" in outcome.status["message"]
    assert deps.agents.cancelled == []


def test_a_pending_run_is_claimed_before_any_stop_is_heard():
    deps = StepDeps()
    run = run_view("Pending")
    deps.api.approve(run, "alice", decision="stop", made=NOW)
    assert steps_endings.interrupt(deps, run) is None
    assert deps.api.requests == []  # not even listed


def test_a_repository_removed_from_the_configuration_ends_the_run_blocked():
    deps = StepDeps()
    run = _working(deps)
    run = RunView({**run.body, "status": {**run.status, "repo": "gone"}})
    with pytest.raises(CannotReconcile) as caught:
        steps_endings.check(deps, run)
    assert caught.value.reason == "RepositoryRemoved" and "configured: app" in str(caught.value)
    outcome = steps_endings.blocked(deps, run, caught.value)
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.BLOCKED, "RepositoryRemoved", True)
    assert deps.agents.cancelled == [(RUN, 1)]
    assert deps.linear.purposes() == ["blocked"]


def test_a_run_that_fits_the_configuration_passes_the_check():
    deps = StepDeps()
    steps_endings.check(deps, _working(deps))  # raises nothing


def test_every_active_phase_has_one_step_and_no_terminal_phase_has_any():
    assert set(loop.STEPS) == {p for p in Phase if p.is_active}
    assert all(callable(step) for step in loop.STEPS.values())


def test_a_terminal_run_is_not_left_even_by_a_valid_stop():
    deps = StepDeps()
    run = run_view("Complete")
    deps.api.runs[("ns", RUN)] = run.body
    deps.api.approve(run, "alice", decision="stop", made=NOW)
    assert loop.reconcile_run(deps, "ns", RUN) == Phase.COMPLETE
    assert [method for method, _ in deps.api.requests] == ["GET"]  # read the run; wrote nothing
    assert deps.agents.cancelled == [] and deps.linear.created == []


def test_a_deleted_active_run_cancels_its_agent_and_frees_the_issue():
    deps = StepDeps()
    steps_intake.claim(deps, run_view())
    run = _working(deps)
    finalize_run(deps, run.body)
    assert deps.agents.cancelled == [(RUN, 1)]
    row = claims.get_run(deps.engine, "ns", RUN)
    assert row.phase == Phase.STOPPED.value and row.finished_at is not None
    assert claims.active_run(deps.engine, "linear", "issue-1") is None


def test_a_deleted_ended_run_touches_nothing():
    deps = StepDeps()
    finalize_run(deps, run_view("Complete").body)
    assert deps.agents.cancelled == []
