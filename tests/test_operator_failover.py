"""Two operator processes under leader election (client-go's 15 s / 10 s / 2 s), on the real
API server and PostgreSQL, the operators being the production entry point in child processes.

- kill -9 of the leader at each step of the happy path (after the claim, after the plan
  comment, after the Job create, after the PR is seen): the standby takes the Lease within
  lease duration + retry period of the death and carries the run on, with no Job, comment
  or audited transition twice;
- a clean stop (SIGTERM) releases the Lease: the standby takes it at its next look;
- a leader cut off from the Lease (its renewals fail; everything else still reaches the API
  server, so only the fences can stop it) stops acting at its renew deadline, before the
  standby's first action: an approval that lands in between waits for the new leader.
"""

from __future__ import annotations

import time

import pytest

from foundry.db import audit, claims
from tests.support.operator_kit import wait_for, wait_phase
from tests.support.operator_pair import (LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, START, OperatorPair,
                                         lease, transitions)
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

TAKEOVER = LEASE_DURATION + RETRY_PERIOD  # 17 s
# Polling the Lease, and a machine shared by several test suites.
SLACK = 1.5
HEALTH = {"app/health.py": "def healthz():\n    return 'ok'\n"}


@pytest.fixture
def stand(control_plane, kube_client, crds, namespace, engine, pg_url, tmp_path):
    with OperatorStack.open(kube_client, engine, namespace) as stack, \
            OperatorPair.open(stack, control_plane.kubeconfig, pg_url, tmp_path) as pair:
        yield stack, pair


def _audited_once(engine, issue_id: str, run: str, phases: list[str]) -> None:
    rows = claims.runs_of_issue(engine, "linear", issue_id)
    assert [r.name for r in rows] == [run], rows
    events = audit.audit_events(engine, rows[0].id)
    assert [e.payload["to"] for e in events if e.kind == "phase"] == phases
    assert audit.verify_audit_chain(engine, rows[0].id)


def _taken_over(pair: OperatorPair, dead, died_at: float) -> float:
    standby = pair.other(dead)
    took = pair.wait_holder(standby, after=died_at - 1) - died_at
    print(f"\n{pair.name(standby)} took the Lease {took:.2f}s after {pair.name(dead)} died")
    assert took <= TAKEOVER + SLACK, f"takeover took {took:.1f}s"
    return took


# The claim: the bridge wrote the row, the operator's first write is the Analysing phase
# (after-db-phase fires there first); the plan comment; the Job; the PR seen (no point: a kill).
@pytest.mark.parametrize("step", ["after-db-phase", "after-comment-post", "after-job-create", "pr-seen"])
def test_kill_9_of_the_leader_at_each_step_the_standby_carries_on_once(stand, engine, step):
    stack, pair = stand
    # The Job is created only after the approval, so every point can be armed from the start.
    leader = pair.start_leader_then_standby(fault=None if step == "pr-seen" else step)
    issue_id, run = stack.ticket()
    if step in ("after-db-phase", "after-comment-post"):
        died_at = pair.wait_death(leader)
        assert leader.proc.returncode == 137, leader.log_tail()
        _taken_over(pair, leader, died_at)
    wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=TAKEOVER + START)
    stack.decide(run, "approve", "alice")
    if step == "after-job-create":
        died_at = pair.wait_death(leader)
        assert leader.proc.returncode == 137, leader.log_tail()
        assert stack.jobs(run) == [f"{run}-a1"]
        _taken_over(pair, leader, died_at)
    wait_phase(stack.api, stack.namespace, run, "AgentRunning", timeout=START)
    sha = stack.push(run, HEALTH)
    number = stack.open_pr(run)
    wait_phase(stack.api, stack.namespace, run, "PROpen", timeout=START)
    if step == "pr-seen":
        died_at = pair.kill(leader)
        _taken_over(pair, leader, died_at)
    stack.finish_job(f"{run}-a1")
    stack.ci(sha, "success")
    stack.merge(number)
    wait_phase(stack.api, stack.namespace, run, "Complete", timeout=TAKEOVER + START)

    assert stack.jobs(run) == [f"{run}-a1"]
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    _audited_once(engine, issue_id, run,
                  ["Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen", "Complete"])


def test_a_clean_stop_hands_over_at_the_next_look(stand, engine):
    stack, pair = stand
    leader = pair.start_leader_then_standby()
    issue_id, run = stack.ticket()
    wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
    stopped = time.time()
    assert leader.stop() == 0, leader.log_tail()
    took = pair.wait_holder(pair.other(leader), after=stopped - 1, timeout=TAKEOVER) - stopped
    print(f"\nhandover after a clean stop: {took:.2f}s")
    assert took <= RETRY_PERIOD + SLACK, f"the handover took {took:.1f}s: the Lease was not released"
    stack.decide(run, "approve", "alice")
    wait_phase(stack.api, stack.namespace, run, "AgentRunning", timeout=START)
    assert stack.jobs(run) == [f"{run}-a1"] and stack.comment_purposes(issue_id) == ["approval_request"]


def test_a_leader_cut_off_from_its_lease_stops_before_the_standby_starts(control_plane, kube_client, crds,
                                                                         namespace, engine, pg_url, tmp_path):
    cut = tmp_path / "cut-off"
    with OperatorStack.open(kube_client, engine, namespace) as stack, \
            OperatorPair.open(stack, control_plane.kubeconfig, pg_url, tmp_path) as pair:
        # Only op-0, the first leader, is ever cut off.
        pair.ops[0].env["FOUNDRY_FAULT_BLOCK_LEASE"] = str(cut)
        leader = pair.start_leader_then_standby()
        standby = pair.other(leader)
        issue_id, run = stack.ticket()
        wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
        cut.touch()
        cut_at = time.time()
        # Past the leader's renew deadline, before the standby may take over: an approval
        # lands. The old leader still watches and reaches the API server and the database;
        # only its fences keep it from acting on it.
        time.sleep(RENEW_DEADLINE + 1)
        assert (lease(kube_client, namespace) or {}).get("holder_identity") == pair.name(leader)
        stack.decide(run, "approve", "alice")
        took = pair.wait_holder(standby, after=cut_at, timeout=TAKEOVER + 10) - cut_at
        wait_phase(stack.api, stack.namespace, run, "AgentRunning", timeout=START)
        assert leader.proc.poll() is None, "the cut-off leader must still be running"
        log = leader.log_path.read_text(errors="replace")
        assert "stopped leading" in log, leader.log_tail()

    old = [t for t in transitions(leader) if t[1] == run]
    new = [t for t in transitions(standby) if t[1] == run]
    assert [t[3] for t in old] == ["Analysing", "WaitingApproval"], old
    assert [t[3] for t in new] == ["Approved", "AgentRunning"], new
    assert max(t[0] for t in old) < cut_at < min(t[0] for t in new)
    print(f"\nthe standby took the Lease {took:.2f}s after the cut")
    assert took <= TAKEOVER + RETRY_PERIOD + SLACK
    assert stack.jobs(run) == [f"{run}-a1"] and stack.comment_purposes(issue_id) == ["approval_request"]
    _audited_once(engine, issue_id, run, ["Analysing", "WaitingApproval", "Approved", "AgentRunning"])
