"""The run's reason names what the cluster did to its last attempt (real kopf, real API server,
real PostgreSQL; the pod is played from the Job's template, as in test_operator_agent_results).
The real node shows the same with pods the kernel really kills: test_operator_pod_failures_node."""

from __future__ import annotations

import pytest

from tests.support.operator_kit import operator_thread, wait_phase
from tests.support.agent_pods import play_pod
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def test_an_oomkilled_last_attempt_ends_the_run_as_agent_oomkilled_and_the_cause_is_kept(
        control_plane, kube_client, crds, namespace, engine):
    from tests.support.jobs import finish_job

    with OperatorStack.open(control_plane.api_client(), engine, namespace, stack_config(retry_cap=0)) as stack, \
            operator_thread(stack.deps, namespace):
        _, run = stack.agent_running()
        play_pod(kube_client, namespace, f"{run}-a1", phase="Failed", steps={
            "prepare": ('{"outcome": "pushed", "step": "prepare"}', 0, "Completed"),
            "agent": ('{"outcome": "failed", "step": "agent", "reason": "the command exited with code 137"}',
                      137, "OOMKilled")})
        finish_job(kube_client, namespace, f"{run}-a1", succeeded=False)
        failed = wait_phase(kube_client, namespace, run, "ExecutionFailed")

    status = failed["status"]
    assert status["reason"] == "AgentOOMKilled", status
    assert "OOMKilled (over its memory limit)" in status["message"]
    (attempt,) = status["agent"]["jobs"]
    assert attempt["cause"] == "OOMKilled"  # the CRD's schema keeps it: a replayed reconcile reads the same
