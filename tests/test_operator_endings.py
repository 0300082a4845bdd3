"""The endings other than a merge: an agent that keeps failing, an agent that
finishes without pushing anything, and a PR closed without merging. Each one
ends the run for good, frees the issue's slot in the database, and says so on
the ticket exactly once (real kopf, real API server, real PostgreSQL)."""

from __future__ import annotations

import pytest
from kubernetes import client

from foundry.db import claims
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import REPO, OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _condition(body: dict, kind: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def _comments(stack: OperatorStack, issue_id: str, purpose: str) -> list[str]:
    return [c["body"] for c in stack.linear.comments_json(issue_id) if f"purpose={purpose} " in c["body"]]


def _warnings(kube_client, namespace: str, run: str) -> set[str]:
    return {e.reason for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
            if e.involved_object.name == run and e.type == "Warning"}


def test_an_agent_that_fails_every_attempt_ends_execution_failed_at_the_retry_cap(
        control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace, stack_config(retry_cap=1)) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        stack.finish_job(f"{run}-a1", succeeded=False)
        # One retry is allowed: attempt 2 gets its own Job.

        wait_for(lambda: stack.jobs(run) == [f"{run}-a1", f"{run}-a2"], timeout=30, what="the attempt-2 Job")
        assert stack.phase(run) == "AgentRunning"
        stack.finish_job(f"{run}-a2", succeeded=False)
        failed = wait_phase(kube_client, namespace, run, "ExecutionFailed", timeout=30)

        cond = _condition(failed, "AgentRunning")
        assert cond["status"] == "False" and cond["reason"] == "AgentFailed"
        assert "attempt 2 failed" in cond["message"] and "retry cap" in cond["message"], cond
        assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]  # no third attempt
        # The Event follows the status write (decision 0004): wait for it.
        wait_for(lambda: "AgentFailed" in _warnings(kube_client, namespace, run), timeout=15, what="the AgentFailed Event")

    (told,) = _comments(stack, issue_id, "blocked")
    assert "attempt 2 failed" in told
    row = claims.get_run(engine, namespace, run)
    assert row.phase == "ExecutionFailed" and row.finished_at is not None


def test_an_agent_that_finishes_without_a_commit_ends_execution_failed_after_the_wait(
        control_plane, kube_client, crds, namespace, engine):
    config = stack_config()
    config["timeouts"]["pr_wait_seconds"] = 2
    with OperatorStack.open(kube_client, engine, namespace, config) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        stack.finish_job(f"{run}-a1", succeeded=True)
        # finish_job dates the Job's completion 30 s back, past the 2 s wait.
        failed = wait_phase(kube_client, namespace, run, "ExecutionFailed", timeout=30)
        cond = _condition(failed, "AgentRunning")
        assert cond["reason"] == "NoPullRequest" and f"foundry/{run}" in cond["message"], cond
        assert stack.jobs(run) == [f"{run}-a1"]

    (told,) = _comments(stack, issue_id, "blocked")
    assert "no new commit" in told
    assert claims.get_run(engine, namespace, run).phase == "ExecutionFailed"


def test_a_pr_closed_without_merging_ends_closed_and_cancels_the_agent(
        control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        number = stack.open_pr(run)
        wait_phase(kube_client, namespace, run, "PROpen")
        # The agent is still running when a human closes the PR.
        stack.github.close(REPO, number)
        closed = wait_phase(kube_client, namespace, run, "Closed", timeout=30)

        assert closed["status"]["pr"]["number"] == number and closed["status"]["pr"]["state"] == "closed"
        assert _condition(closed, "Complete")["status"] == "False"
        assert [(j["attempt"], j["state"]) for j in closed["status"]["agent"]["jobs"]] == [(1, "cancelled")]
        # The Event follows the status write (decision 0004): wait for it.
        wait_for(lambda: "ClosedUnmerged" in _warnings(kube_client, namespace, run), timeout=15, what="the ClosedUnmerged Event")

        wait_for(lambda: stack.jobs(run) == [], timeout=30, what="the agent Job cancelled")

    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    (told,) = _comments(stack, issue_id, "done")
    assert "closed without merging" in told
    # Foundry moves the ticket to Done only when its work merged.
    assert stack.linear.issue_json(issue_id)["state"]["name"] != "Done"
    assert claims.get_run(engine, namespace, run).phase == "Closed"
