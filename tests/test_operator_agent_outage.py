"""A stop while the agent backend (the API server the Jobs live on) is silent
is retried like any outage, then applied once it answers (real API server and
PostgreSQL; Linear and GitHub stand-ins; the Jobs' client pointed at a server
that accepts and never answers).

Any step may read or cancel an attempt, so an unreachable backend surfaced as a
crash (ConnectionError: counted unexpected, logged with a traceback) instead
of RetryLater.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from foundry.agents import make_provider
from foundry.agents.credentials import StaticTokenSource
from foundry.domain.phases import Phase
from foundry.operator.errors import RetryLater
from foundry.operator.kubeio import bound_requests
from foundry.operator.reconcile.loop import reconcile_run
from tests.support.operator_stack import OperatorStack
from tests.support.silent_server import SilentServer

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _to_agent_running(stack: OperatorStack, run: str) -> None:
    assert reconcile_run(stack.deps, stack.namespace, run) == Phase.WAITING_APPROVAL
    stack.decide(run, "approve", "alice")
    assert reconcile_run(stack.deps, stack.namespace, run) == Phase.AGENT_RUNNING


def test_a_stop_during_an_agent_backend_outage_is_retried_then_applied(kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, SilentServer() as silent:
        _, run = stack.ticket()
        time.sleep(1.1)  # the approval must be newer than the plan (whole seconds)
        _to_agent_running(stack, run)
        working = stack.deps.agents
        cfg = client.Configuration()
        cfg.host = silent.url
        silent_api = bound_requests(client.ApiClient(cfg), connect=1.0, read=1.0)
        stack.deps.agents = make_provider(stack.deps.config, silent_api, StaticTokenSource(stack.github.token))
        stack.decide(run, "stop", "alice")
        with pytest.raises(RetryLater) as outage:
            reconcile_run(stack.deps, namespace, run)
        assert "agent backend" in str(outage.value)
        assert stack.phase(run) == "AgentRunning" and stack.jobs(run) == [f"{run}-a1"]

        stack.deps.agents = working  # the backend answers again
        assert reconcile_run(stack.deps, namespace, run) == Phase.STOPPED
        assert stack.jobs(run) == []
        silent_api.close()
    samples = {kind: stack.deps.metrics.registry.get_sample_value("foundry_reconcile_errors_total", {"kind": kind})
               for kind in ("retry", "unexpected")}
    assert samples == {"retry": 1.0, "unexpected": 0.0}, samples
