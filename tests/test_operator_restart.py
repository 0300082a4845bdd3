"""The operator is down while the world moves on, then starts again.

Where test_operator_crash kills the operator *inside* a reconcile, here it is
stopped between them, at rest in a waiting phase, and something happens that
it would normally hear about by a watch event: an approval, the agent's Job
finishing with a PR and green CI, an approval deadline passing. A restarted
operator sees no such event (kopf's initial listing is not an event), so it
must rebuild the picture from the sources alone, on its resume of each run.

An approval deadline is the plan's, not the operator's: an approval given in
time while the operator is down still counts after the deadline, one given
after the deadline does not revive the plan.

The first three scenarios run twice each: a clean stop (SIGTERM, as in a
rolling upgrade) and a kill -9 (a node lost). The operator is a child process
with production-built Deps (tests.support.operator_process). After each
restart the run is counted: one Job per attempt, one comment per purpose,
each transition audited once, an audit chain that verifies.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from foundry.db import audit, claims
from tests.support.operator_kit import wait_for, wait_phase
from tests.support.operator_process import OperatorProcess
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

# A child operator imports kopf and the clients before it does anything; generous.
START = 45.0
HEALTH = {"app/health.py": "def healthz():\n    return 'ok'\n"}
# Long enough that a restarted operator is up well within one more period, so
# "expired promptly" and "expired after a fresh wait" are told apart.
APPROVAL_SECONDS = 10


@pytest.fixture
def open_stand(control_plane, kube_client, crds, namespace, engine, pg_url, tmp_path):
    """Opens the stack (Linear/GitHub in this process) and the operator as a child, with one config."""

    @contextmanager
    def opened(config: dict | None = None) -> Iterator[tuple[OperatorStack, OperatorProcess]]:
        with OperatorStack.open(kube_client, engine, namespace, config) as stack, \
                OperatorProcess.open(stack, control_plane.kubeconfig, pg_url, tmp_path / "operator", config) as op:
            yield stack, op

    return opened


def _stop(op: OperatorProcess, how: str) -> None:
    if how == "sigterm":
        code = op.stop()
        assert code == 0, f"a clean stop exited {code}\n{op.log_tail()}"
    else:
        op.kill()


def _counted(stack: OperatorStack, engine, issue_id: str, run: str, jobs: list[str], purposes: list[str],
             phases: list[str]) -> None:
    """The invariants after a restart: Jobs, comments, DB row, audit trail."""
    assert stack.jobs(run) == jobs
    assert stack.comment_purposes(issue_id) == purposes  # sorted; a repeat would show twice
    rows = claims.runs_of_issue(engine, "linear", issue_id)
    assert [r.name for r in rows] == [run], rows
    events = audit.audit_events(engine, rows[0].id)
    assert [e.payload["to"] for e in events if e.kind == "phase"] == phases
    assert audit.verify_audit_chain(engine, rows[0].id)


def _status(stack: OperatorStack, run: str) -> dict:
    return stack.run(run).get("status") or {}


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_approval_given_while_down_starts_the_agent_once(open_stand, engine, how):
    with open_stand() as (stack, op):
        issue_id, run = stack.ticket()
        op.start()
        wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
        _stop(op, how)

        stack.decide(run, "approve", "alice")
        assert stack.phase(run) == "WaitingApproval" and stack.jobs(run) == []  # nobody acted on it yet

        op.start()
        running = wait_phase(stack.api, stack.namespace, run, "AgentRunning", timeout=START)
        assert running["status"]["approvals"]["summary"] == "1/1"
        assert [j["attempt"] for j in running["status"]["agent"]["jobs"]] == [1]

        # Drive on to a PR: the restarted operator keeps the run moving on one Job.
        sha = stack.push(run, HEALTH)
        stack.open_pr(run)
        stack.ci(sha, "success")
        stack.finish_job(f"{run}-a1")
        wait_for(lambda: (s := _status(stack, run))["phase"] == "PROpen"
                 and [j["state"] for j in s["agent"]["jobs"]] == ["succeeded"], timeout=30, what="PROpen, a1 done")

    _counted(stack, engine, issue_id, run, [f"{run}-a1"], ["approval_request", "pr_opened"],
             ["Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen"])


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_pr_opened_and_ci_passed_while_down_is_found_on_restart(open_stand, engine, how):
    with open_stand() as (stack, op):
        issue_id, run = stack.ticket()
        op.start()
        wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
        stack.decide(run, "approve", "alice")
        wait_phase(stack.api, stack.namespace, run, "AgentRunning")
        _stop(op, how)

        # The whole agent attempt happens while nobody watches.
        sha = stack.push(run, HEALTH)
        number = stack.open_pr(run)
        stack.ci(sha, "success")
        stack.finish_job(f"{run}-a1")
        assert _status(stack, run)["phase"] == "AgentRunning"

        op.start()
        opened = wait_phase(stack.api, stack.namespace, run, "PROpen", timeout=START)
        pr = opened["status"]["pr"]
        assert (pr["number"], pr["headSha"], pr["checks"], pr["state"]) == (number, sha, "success", "open"), pr
        assert [(j["attempt"], j["state"]) for j in opened["status"]["agent"]["jobs"]] == [(1, "succeeded")]
        assert "pr_opened" in opened["status"]["comments"]

        stack.merge(number)
        wait_phase(stack.api, stack.namespace, run, "Complete")

    _counted(stack, engine, issue_id, run, [f"{run}-a1"], ["approval_request", "done", "pr_opened"],
             ["Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen", "Complete"])


def _approval_deadline(body: dict) -> datetime:
    """When the plan expires: the Approved=False condition's time plus the approval timeout."""
    cond = next(c for c in body["status"]["conditions"] if c["type"] == "Approved")
    assert cond["status"] == "False", cond
    return datetime.fromisoformat(cond["lastTransitionTime"].replace("Z", "+00:00")) + timedelta(
        seconds=APPROVAL_SECONDS)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_approval_deadline_passed_while_down_expires_on_restart(open_stand, engine, how):
    config = stack_config()
    config["timeouts"]["approval_seconds"] = APPROVAL_SECONDS
    with open_stand(config) as (stack, op):
        issue_id, run = stack.ticket()
        op.start()
        waiting = wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
        deadline = _approval_deadline(waiting)
        _stop(op, how)

        # Down until the deadline is behind us (the condition's time has whole seconds).
        wait_for(lambda: datetime.now(timezone.utc) > deadline + timedelta(seconds=1),
                 timeout=APPROVAL_SECONDS + 5, interval=0.2, what="the approval deadline to pass")
        assert stack.phase(run) == "WaitingApproval"

        restarted = time.monotonic()
        op.start()
        expired = wait_phase(stack.api, stack.namespace, run, "Expired", timeout=START)
        took = time.monotonic() - restarted
        # Expired on the first look, measured from the original deadline — not
        # after a fresh approval period counted from the restart.
        assert took < APPROVAL_SECONDS, f"expired {took:.1f}s after the restart\n{op.log_tail()}"
        assert expired["status"]["reason"] == "ApprovalExpired"
        assert deadline.isoformat() in expired["status"]["message"], expired["status"]["message"]
        assert {c["type"]: c["status"] for c in expired["status"]["conditions"]}["Approved"] == "False"

    row = claims.get_run(engine, stack.namespace, run)
    assert row.phase == "Expired" and row.finished_at is not None  # the issue's slot is free again
    _counted(stack, engine, issue_id, run, [], ["approval_request"], ["Analysing", "WaitingApproval", "Expired"])


@pytest.mark.parametrize("late", [False, True], ids=["in-time", "late"])
def test_only_an_approval_given_before_the_deadline_counts_after_a_restart(open_stand, engine, late):
    """The deadline is the plan's, not the operator's: while it is down, an
    approval given in time still approves, and one given after the deadline
    does not revive the plan (as it would not with the operator up)."""
    config = stack_config()
    config["timeouts"]["approval_seconds"] = APPROVAL_SECONDS
    with open_stand(config) as (stack, op):
        issue_id, run = stack.ticket()
        op.start()
        deadline = _approval_deadline(wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START))
        op.kill()

        if not late:
            stack.decide(run, "approve", "alice")
        wait_for(lambda: datetime.now(timezone.utc) > deadline + timedelta(seconds=1),
                 timeout=APPROVAL_SECONDS + 5, interval=0.2, what="the approval deadline to pass")
        if late:
            stack.decide(run, "approve", "alice")

        op.start()
        if late:
            ended = wait_phase(stack.api, stack.namespace, run, "Expired", timeout=START)
            assert ended["status"]["reason"] == "ApprovalExpired"
            _counted(stack, engine, issue_id, run, [], ["approval_request"],
                     ["Analysing", "WaitingApproval", "Expired"])
        else:
            wait_phase(stack.api, stack.namespace, run, "AgentRunning", timeout=START)
            _counted(stack, engine, issue_id, run, [f"{run}-a1"], ["approval_request"],
                     ["Analysing", "WaitingApproval", "Approved", "AgentRunning"])
