"""The policy, enforced by the running operator: forbidden paths block for good,
approvals need the roles the risk areas ask for, retries stop at the retry and
budget caps, and a human reject or stop ends a run and its agent (real kopf,
real API server, real PostgreSQL, the local Linear and GitHub servers)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from foundry.connectors.marked_comments import find_markers
from foundry.db import audit, claims
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

WORKFLOW = ".github/workflows/ci.yml"


def _approved_and_running(stack: OperatorStack, kube_client, namespace: str, **ticket: Any) -> tuple[str, str]:
    issue_id, run = stack.ticket(**ticket)
    wait_phase(kube_client, namespace, run, "WaitingApproval")
    stack.decide(run, "approve", "alice")
    wait_phase(kube_client, namespace, run, "AgentRunning")
    assert stack.jobs(run) == [f"{run}-a1"]
    return issue_id, run


def _comment(stack: OperatorStack, issue_id: str, purpose: str) -> str:
    bodies = [c["body"] for c in stack.linear.comments_json(issue_id)
              if any(p == purpose for _, p in find_markers(c["body"]))]
    assert len(bodies) == 1, bodies
    return bodies[0]


def _audit(engine, namespace: str, run: str) -> list[Any]:
    return audit.audit_events(engine, claims.get_run(engine, namespace, run).id)


def _seen_head(stack: OperatorStack, run: str, sha: str) -> bool:
    return (stack.run(run).get("status") or {}).get("pr", {}).get("headSha") == sha


# ---------------------------------------------------------------- forbidden paths


def test_a_forbidden_path_blocks_the_run_for_good_and_cancels_the_agent(control_plane, kube_client, crds,
                                                                        namespace, engine):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = _approved_and_running(stack, kube_client, namespace)
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n", WORKFLOW: "on: push\n"})
        number = stack.open_pr(run)
        blocked = wait_phase(kube_client, namespace, run, "Blocked", timeout=10)
        assert blocked["status"]["reason"] == "ForbiddenPath"
        assert WORKFLOW in blocked["status"]["message"], blocked["status"]["message"]
        assert WORKFLOW in _comment(stack, issue_id, "blocked")
        assert stack.jobs(run) == []  # the running attempt's Job was deleted

        # The agent (or a human) takes the workflow change back out: the PR is
        # now clean, and the run stays Blocked. Several resync periods pass.
        clean = stack.push(run, {WORKFLOW: None})
        assert WORKFLOW not in {f["filename"] for f in stack.deps.github.list_pull_files("acme/app", number)}
        time.sleep(3.5)
        after = stack.run(run)

    assert after["status"]["phase"] == "Blocked" and after["status"]["reason"] == "ForbiddenPath"
    assert after["status"]["pr"]["headSha"] != clean  # nothing re-judged the clean head
    assert stack.jobs(run) == []
    assert stack.comment_purposes(issue_id) == ["approval_request", "blocked"]
    assert claims.get_run(engine, namespace, run).phase == "Blocked"


# ---------------------------------------------------------------- roles


AUTH_DESCRIPTION = (
    "Users need to sign in to the service before they can use it.\n\n"
    "## Acceptance criteria\n"
    "- POST /login checks the password and answers 200 with a session\n"
    "- a test covers a wrong password\n"
)


def test_an_approval_without_the_role_a_risk_area_needs_is_refused_with_the_reason(control_plane, kube_client,
                                                                                    crds, namespace, engine):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.ticket("Add a login endpoint to the service", AUTH_DESCRIPTION)
        waiting = wait_phase(kube_client, namespace, run, "WaitingApproval")
        assert "auth" in waiting["status"]["riskAreas"]
        request = _comment(stack, issue_id, "approval_request")
        assert "Alice" in request and "Bob" not in request  # only who may approve is offered

        stack.decide(run, "approve", "bob")  # Bob holds [dev]; auth needs security
        refused = wait_for(lambda: "refused" in ((b := stack.run(run))["status"].get("message") or "") and b,
                           timeout=10, what="Bob's approval refused")
        message = refused["status"]["message"]
        assert refused["status"]["phase"] == "WaitingApproval"
        assert message.startswith("0/1 approvals; refused: bob: ")
        assert "Bob lacks a required role" in message and "auth" in message and "security" in message
        assert refused["status"]["approvals"]["received"] == 0
        assert stack.jobs(run) == []
        seen = [e.payload for e in _audit(engine, namespace, run) if e.kind == "approvals-seen"]
        assert seen and seen[-1]["received"] == 0
        assert [who for who, _ in seen[-1]["refused"]] == ["bob"]
        assert "security" in seen[-1]["refused"][0][1]

        stack.decide(run, "approve", "alice")
        wait_phase(kube_client, namespace, run, "AgentRunning", timeout=10)
        approved = stack.run(run)

    assert [a["name"] for a in approved["status"]["approvals"]["approvers"]] == ["Alice"]
    assert approved["status"]["approvals"]["summary"] == "1/1"
    phases = [(e.payload["to"], e.payload["reason"]) for e in _audit(engine, namespace, run) if e.kind == "phase"]
    assert ("Approved", "ApprovalsSatisfied") in phases
    assert stack.jobs(run) == [f"{run}-a1"]


# ---------------------------------------------------------------- caps


def _fail_ci_until_stopped(stack: OperatorStack, kube_client, namespace: str, run: str) -> tuple[dict, list[str]]:
    """Each attempt pushes a new head, exits, and CI fails on it; returns the
    run once it needs review, and the failing heads in order."""
    heads: list[str] = []
    attempt = 1
    while True:
        head = stack.push(run, {f"app/try_{attempt}.py": f"ATTEMPT = {attempt}\n"})
        heads.append(head)
        if attempt == 1:
            stack.open_pr(run)
        wait_for(lambda: _seen_head(stack, run, head), timeout=10, what=f"head of attempt {attempt} seen")
        stack.finish_job(f"{run}-a{attempt}")
        stack.ci(head, "failure")
        body = wait_for(lambda: ((b := stack.run(run))["status"]["phase"] == "ReviewRequired"
                                 or b["status"]["agent"]["attempt"] > attempt) and b,
                        timeout=10, what=f"an answer to the failure of attempt {attempt}")
        if body["status"]["phase"] == "ReviewRequired":
            return body, heads
        attempt += 1
        assert attempt <= 10, "no cap stopped the retries"


def test_retries_stop_at_the_retry_cap(control_plane, kube_client, crds, namespace, engine):
    config = stack_config(retry_cap=2, budget_cap=5)
    with OperatorStack.open(control_plane.api_client(), engine, namespace, config) as stack, \
            operator_thread(stack.deps, namespace):
        _, run = _approved_and_running(stack, kube_client, namespace)
        stopped, heads = _fail_ci_until_stopped(stack, kube_client, namespace, run)

    status = stopped["status"]
    assert status["reason"] == "RetryCapReached"
    assert "retry cap reached" in status["message"], status["message"]
    assert stack.jobs(run) == [f"{run}-a{n}" for n in range(1, 1 + 2 + 1)]  # 1 + retry_cap
    assert status["remediations"] == {heads[0]: 2, heads[1]: 3}
    assert status["pr"]["headSha"] == heads[-1] and status["pr"]["checks"] == "failure"


def test_the_budget_cap_stops_retries_before_the_retry_cap(control_plane, kube_client, crds, namespace, engine):
    config = stack_config(retry_cap=2, budget_cap=2)  # budget 2 attempts < 1 + retry_cap = 3
    with OperatorStack.open(control_plane.api_client(), engine, namespace, config) as stack, \
            operator_thread(stack.deps, namespace):
        _, run = _approved_and_running(stack, kube_client, namespace)
        stopped, heads = _fail_ci_until_stopped(stack, kube_client, namespace, run)

    status = stopped["status"]
    assert status["reason"] == "BudgetCapReached"
    assert "budget cap reached: 2 agent attempt(s) used of 2" in status["message"], status["message"]
    assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]
    assert status["remediations"] == {heads[0]: 2}


# ---------------------------------------------------------------- reject and stop


@pytest.mark.parametrize("decision, approver, expected, reason", [
    ("reject", "alice", "Rejected", "Rejected"),
    ("stop", "bob", "Stopped", "StoppedByHuman"),  # stopping work needs no particular role
])
@pytest.mark.parametrize("while_in", ["WaitingApproval", "AgentRunning"])
def test_a_human_reject_or_stop_ends_the_run_and_its_agent(control_plane, kube_client, crds, namespace, engine,
                                                          while_in, decision, approver, expected, reason):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        if while_in == "WaitingApproval":
            _, run = stack.ticket()
            wait_phase(kube_client, namespace, run, "WaitingApproval")
        else:
            _, run = _approved_and_running(stack, kube_client, namespace)
        stack.decide(run, decision, approver)
        ended = wait_phase(kube_client, namespace, run, expected, timeout=10)
        jobs = stack.jobs(run)

    assert ended["status"]["reason"] == reason
    assert ended["status"]["message"] == f"{decision} by {approver} (kubernetes)"
    assert jobs == []  # the attempt's Job was deleted (or never created)
    row = claims.get_run(engine, namespace, run)
    assert row.phase == expected and row.finished_at is not None
    phases = [e.payload["to"] for e in _audit(engine, namespace, run) if e.kind == "phase"]
    assert phases[-2:] == [while_in, expected], phases
