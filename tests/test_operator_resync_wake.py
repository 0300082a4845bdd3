"""The resync timer polls a run as soon as another path moves it into a polled
phase (real kopf, API server, PostgreSQL; Linear and GitHub stand-ins, no
webhooks).

A run in WaitingApproval is idle: its next wake on the work queue's
scheduler is the approval's expiry (an hour without one). An approval event
moves it to AgentRunning, where only the resync notices the agent's PR when no
webhook arrives. The wake must follow the phase, not come an hour later.
"""

from __future__ import annotations

import time

import pytest

from tests.support.operator_kit import operator_thread, wait_phase
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def test_a_run_moved_out_of_an_idle_phase_is_polled_again(kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, operator_thread(stack.deps, namespace):
        _, run = stack.ticket()
        wait_phase(kube_client, namespace, run, "WaitingApproval")
        time.sleep(2.5)  # two resync periods: the scheduler has the run's next wake an hour away
        stack.decide(run, "approve", "alice")
        wait_phase(kube_client, namespace, run, "AgentRunning")
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        number = stack.open_pr(run)  # no webhook: only the resync can see it
        opened = wait_phase(kube_client, namespace, run, "PROpen", timeout=10)
    assert opened["status"]["pr"]["number"] == number
