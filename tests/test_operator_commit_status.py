"""CI that reports only through commit statuses drives the run as check runs do: a failing
status remediates, a passing one is recorded on the PR (real kopf, real API server, real
PostgreSQL, the local GitHub's combined status as GitHub serves it)."""

from __future__ import annotations

import pytest

from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import REPO, OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def test_a_status_only_ci_failure_remediates_and_its_success_is_recorded(control_plane, kube_client, crds,
                                                                         namespace, engine):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        _, run = stack.ticket()
        wait_phase(kube_client, namespace, run, "WaitingApproval")
        stack.decide(run, "approve", "alice")
        wait_phase(kube_client, namespace, run, "AgentRunning")

        first = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        stack.open_pr(run)
        wait_phase(kube_client, namespace, run, "PROpen")
        stack.finish_job(f"{run}-a1")
        # The repository's CI (say, Jenkins) reports a commit status and no check run.
        stack.github.set_status(REPO, first, "pending", context="ci/jenkins")
        stack.github.set_status(REPO, first, "failure", context="ci/jenkins", description="2 tests failed")
        remediating = wait_for(lambda: (body := stack.run(run))["status"].get("agent", {}).get("attempt") == 2
                               and body, timeout=30, what="attempt 2")
        assert remediating["status"]["phase"] == "AgentRunning"
        assert remediating["status"]["remediations"] == {first: 2}

        second = stack.push(run, {"app/test_health.py": "def test_ok():\n    assert True\n"})
        stack.github.set_status(REPO, second, "success", context="ci/jenkins")
        stack.finish_job(f"{run}-a2")
        passed = wait_for(lambda: (body := stack.run(run))["status"].get("pr", {}).get("checks") == "success"
                          and body, timeout=30, what="checks success on the second head")
        assert passed["status"]["phase"] == "PROpen" and passed["status"]["pr"]["headSha"] == second
        assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]
