"""A PR on a run's branch is adopted only if Foundry opened it from a commit its
runner pushed (real kopf, real API server, the local GitHub and Linear)."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from foundry.connectors.marked_comments import find_markers
from tests.support.operator_kit import operator_thread, wait_for
from tests.support.operator_stack import REPO, OperatorStack, runner_message

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

HEALTH = {"app/health.py": "def healthz():\n    return 'ok'\n"}


def _notices(stack: OperatorStack, issue_id: str) -> list[dict]:
    return [c for c in stack.linear.comments_json(issue_id)
            if any(p.startswith("pr_not_adopted.") for _, p in find_markers(c["body"]))]


def _events(kube_client, namespace: str, run: str) -> list:
    return [e for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
            if e.involved_object.name == run and e.reason == "PullRequestNotAdopted"]


def test_a_pr_someone_else_opened_from_the_runs_branch_is_not_adopted(
        control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        gh = stack.github
        # Run 1: mallory opens the PR, even from a commit dressed as the runner's.
        issue_1, run_1 = stack.agent_running()
        stack.push(run_1, HEALTH)
        hijack = gh.open_pr(REPO, f"foundry/{run_1}", f"{run_1}: work", user="mallory")
        # Run 2: a PR opened as Foundry, but on a head a person pushed (no runner trailers).
        issue_2, run_2 = stack.agent_running()
        gh.create_branch(REPO, f"foundry/{run_2}")
        gh.commit(REPO, f"foundry/{run_2}", HEALTH, "quick fix", author="mallory")
        borrowed = gh.open_pr(REPO, f"foundry/{run_2}", f"{run_2}: work")

        told_1 = wait_for(lambda: _notices(stack, issue_1), timeout=30, what="the notice on ticket 1")
        assert f"PR #{hijack} was opened by mallory, not by Foundry (foundry-agent)" in told_1[0]["body"]
        told_2 = wait_for(lambda: _notices(stack, issue_2), timeout=30, what="the notice on ticket 2")
        assert f"of PR #{borrowed} was not pushed by Foundry's runner for this run" in told_2[0]["body"]
        wait_for(lambda: _events(kube_client, namespace, run_1) and _events(kube_client, namespace, run_2),
                 timeout=10, what="the Warning Events")
        time.sleep(3)  # several resyncs (1 s): still one notice each, and no PR adopted
        for issue, run in ((issue_1, run_1), (issue_2, run_2)):
            body = stack.run(run)
            assert body["status"]["phase"] == "AgentRunning", body["status"]
            assert "number" not in (body["status"].get("pr") or {}), body["status"]["pr"]
            assert "pr_opened" not in (body["status"].get("comments") or {})
            assert len(_notices(stack, issue)) == 1
            assert stack.comment_purposes(issue).count("pr_opened") == 0

        # The runner's own commit on run 2's branch, in Foundry's PR: adopted.
        gh.commit(REPO, f"foundry/{run_2}", {"app/health.py": "def healthz():\n    return 'OK'\n"},
                  runner_message("foundry: work", run_2, 1), author="Foundry agent")
        wait_for(lambda: (stack.run(run_2)["status"].get("pr") or {}).get("number") == borrowed, timeout=30,
                 what="Foundry's PR adopted once its head is the runner's")
