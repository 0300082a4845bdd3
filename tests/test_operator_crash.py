"""kill -9 right after a side effect, before it is recorded, then restart: the
restarted operator finds its earlier work instead of repeating it.

The operator runs as a child process with Deps built the production way
(tests.support.operator_process); a fault point (tests.support.crash_points)
ends it with exit code 137 between a side effect (the DB row insert, a Linear
comment, a Job create, a DB phase write) and the status write that records it.
Each test checks that the crash really fell in that gap, restarts the operator
without the fault, drives the run on, and then counts: one Job per attempt,
one comment per purpose, one DB row for the issue, each transition audited
once, and an audit chain that verifies.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from foundry.db import audit, claims
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest, create_or_attach
from tests.support.operator_kit import wait_for, wait_phase
from tests.support.operator_process import OperatorProcess
from tests.support.operator_stack import READY_DESCRIPTION, TEAM, OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

# The first start of a child operator imports kopf and the clients; generous.
START = 45.0

HEALTH = {"app/health.py": "def healthz():\n    return 'ok'\n"}
HEALTH_TEST = {"app/test_health.py": "def test_ok():\n    assert True\n"}


@pytest.fixture
def stand(control_plane, kube_client, crds, namespace, engine, pg_url, tmp_path):
    """The stack's Linear/GitHub servers in this process, the operator in a child."""
    with OperatorStack.open(kube_client, engine, namespace) as stack, \
            OperatorProcess.open(stack, control_plane.kubeconfig, pg_url, tmp_path / "operator") as op:
        yield stack, op


def _crashed(op: OperatorProcess) -> None:
    code = op.wait_exit(START)
    assert code == 137, f"exit {code}, not the fault point's 137\n{op.log_tail()}"


def _status(stack: OperatorStack, run: str) -> dict:
    return stack.run(run).get("status") or {}


def _comment_ids(stack: OperatorStack, issue_id: str, purpose: str) -> list[str]:
    from foundry.connectors.marked_comments import find_markers

    return [c["id"] for c in stack.linear.comments_json(issue_id)
            if any(p == purpose for _, p in find_markers(c["body"]))]


def _audited_once(engine, issue_id: str, run: str, phases: list[str]) -> None:
    """One DB row for the issue, the phases audited exactly as `phases` (no
    transition twice), and a hash chain that verifies."""
    rows = claims.runs_of_issue(engine, "linear", issue_id)
    assert [r.name for r in rows] == [run], rows
    events = audit.audit_events(engine, rows[0].id)
    assert [e.payload["to"] for e in events if e.kind == "phase"] == phases
    assert audit.verify_audit_chain(engine, rows[0].id)


def test_crash_after_db_insert_is_recovered_as_own_row(stand, engine):
    stack, op = stand
    # A run the bridge did not claim (kubectl apply): the operator's insert is its first write.
    issue_id = stack.linear.create_issue(TEAM, "Add a health endpoint to the service", READY_DESCRIPTION,
                                         labels=["foundry"], actor_id=stack.alice_id)
    issue = stack.linear.issue_json(issue_id)
    ticket = TicketSnapshot(tracker="linear", issue_id=issue_id, issue_key=issue["identifier"],
                            title=issue["title"], description=READY_DESCRIPTION, labels=("foundry",), team_key=TEAM,
                            updated_at=datetime.fromisoformat(issue["updatedAt"].replace("Z", "+00:00")))
    manifest = build_run_manifest(ticket, 1, Trigger(source="manual", actor="alice"), namespace=stack.namespace)
    run = manifest["metadata"]["name"]
    create_or_attach(stack.api, stack.namespace, manifest)

    op.start(fault="after-db-insert")
    _crashed(op)
    # Died after the insert and before any status write or comment.
    assert claims.get_run(engine, stack.namespace, run) is not None
    assert _status(stack, run).get("phase") in (None, "Pending")
    assert stack.comment_purposes(issue_id) == []

    op.start()
    waiting = wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
    # Its own row did not count as another active run (no Duplicate).
    assert stack.comment_purposes(issue_id) == ["approval_request"]
    assert waiting["status"]["comments"]["approval_request"] == _comment_ids(stack, issue_id, "approval_request")[0]
    assert stack.jobs(run) == []
    _audited_once(engine, issue_id, run, ["Analysing", "WaitingApproval"])


def test_crash_after_each_comment_post_finds_the_comment_instead_of_posting_again(stand, engine):
    stack, op = stand
    issue_id, run = stack.ticket()

    # 1. The approval request is on the issue; the status never heard of it.
    op.start(fault="after-comment-post")
    _crashed(op)
    assert stack.comment_purposes(issue_id) == ["approval_request"]
    status = _status(stack, run)
    assert status.get("phase") == "Analysing" and "approval_request" not in (status.get("comments") or {}), status

    op.start()
    waiting = wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
    assert waiting["status"]["comments"]["approval_request"] == _comment_ids(stack, issue_id, "approval_request")[0]
    stack.decide(run, "approve", "alice")
    wait_phase(stack.api, stack.namespace, run, "AgentRunning")

    # 2. The "PR opened" comment: armed again while the run waits for the agent.
    op.kill()
    op.start(fault="after-comment-post")
    sha = stack.push(run, HEALTH)
    number = stack.open_pr(run)
    _crashed(op)
    assert stack.comment_purposes(issue_id) == ["approval_request", "pr_opened"]
    status = _status(stack, run)
    assert status["phase"] == "AgentRunning" and "pr_opened" not in status["comments"], status

    op.start()
    opened = wait_phase(stack.api, stack.namespace, run, "PROpen", timeout=START)
    assert opened["status"]["comments"]["pr_opened"] == _comment_ids(stack, issue_id, "pr_opened")[0]
    stack.finish_job(f"{run}-a1")
    stack.ci(sha, "success")

    # 3. The closing comment, on the way to Complete.
    op.kill()
    op.start(fault="after-comment-post")
    stack.merge(number)
    _crashed(op)
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    assert _status(stack, run)["phase"] == "PROpen"

    op.start()
    done = wait_phase(stack.api, stack.namespace, run, "Complete", timeout=START)
    assert done["status"]["comments"]["done"] == _comment_ids(stack, issue_id, "done")[0]
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    assert stack.jobs(run) == [f"{run}-a1"]
    _audited_once(engine, issue_id, run,
                  ["Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen", "Complete"])


def test_crash_after_each_job_create_adopts_the_job(stand, engine):
    stack, op = stand
    issue_id, run = stack.ticket()

    # 1. Attempt 1: the Job exists, the status does not name it.
    op.start(fault="after-job-create")
    wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
    stack.decide(run, "approve", "alice")
    _crashed(op)
    assert stack.jobs(run) == [f"{run}-a1"]
    status = _status(stack, run)
    assert status["phase"] == "Approved" and not (status.get("agent") or {}).get("jobs"), status

    op.start()
    running = wait_phase(stack.api, stack.namespace, run, "AgentRunning", timeout=START)
    assert [j["attempt"] for j in running["status"]["agent"]["jobs"]] == [1]
    assert stack.jobs(run) == [f"{run}-a1"]

    first = stack.push(run, HEALTH)
    number = stack.open_pr(run)
    wait_phase(stack.api, stack.namespace, run, "PROpen")
    stack.finish_job(f"{run}-a1")

    # 2. Attempt 2, the remediation of a CI failure: the Job exists, the
    # remediation keyed by the failing head is not recorded yet.
    op.kill()
    op.start(fault="after-job-create")
    stack.ci(first, "failure")
    _crashed(op)
    assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]
    status = _status(stack, run)
    assert status["phase"] == "PROpen" and first not in (status.get("remediations") or {}), status

    op.start()
    remediating = wait_for(lambda: (body := stack.run(run))["status"].get("agent", {}).get("attempt") == 2
                           and body, timeout=START, what="attempt 2 recorded")
    assert remediating["status"]["phase"] == "AgentRunning"
    assert remediating["status"]["remediations"] == {first: 2}

    second = stack.push(run, HEALTH_TEST)
    stack.ci(second, "success")
    stack.finish_job(f"{run}-a2")
    wait_for(lambda: (s := _status(stack, run))["phase"] == "PROpen" and s["pr"]["headSha"] == second,
             what="PROpen on the second head")
    stack.merge(number)
    done = wait_phase(stack.api, stack.namespace, run, "Complete")

    assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]
    assert [(j["attempt"], j["state"]) for j in done["status"]["agent"]["jobs"]] == [(1, "succeeded"),
                                                                                     (2, "succeeded")]
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    _audited_once(engine, issue_id, run, ["Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen",
                                          "AgentRunning", "PROpen", "Complete"])


def test_crash_after_db_phase_write_does_not_audit_it_twice(stand, engine):
    stack, op = stand
    issue_id, run = stack.ticket()

    # 1. The first transition is in the database, not in the status.
    op.start(fault="after-db-phase")
    _crashed(op)
    assert claims.get_run(engine, stack.namespace, run).phase == "Analysing"
    assert _status(stack, run).get("phase") in (None, "Pending")

    op.start()
    wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
    stack.decide(run, "approve", "alice")
    wait_phase(stack.api, stack.namespace, run, "AgentRunning")
    sha = stack.push(run, HEALTH)
    number = stack.open_pr(run)
    wait_phase(stack.api, stack.namespace, run, "PROpen")
    stack.finish_job(f"{run}-a1")
    stack.ci(sha, "success")

    # 2. The last one: the row is finished (the issue's slot is free) while
    # the status still says PROpen.
    op.kill()
    op.start(fault="after-db-phase")
    stack.merge(number)
    _crashed(op)
    row = claims.get_run(engine, stack.namespace, run)
    assert row.phase == "Complete" and row.finished_at is not None
    assert _status(stack, run)["phase"] == "PROpen"

    op.start()
    wait_phase(stack.api, stack.namespace, run, "Complete", timeout=START)
    assert stack.jobs(run) == [f"{run}-a1"]
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    _audited_once(engine, issue_id, run,
                  ["Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen", "Complete"])
