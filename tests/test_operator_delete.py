"""Deleting a run mid-flight: the finalizer cancels its agent and closes its
database row, so the issue's slot is free for a new attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kubernetes import client

from foundry.db import claims
from foundry.db.engine import make_engine
from foundry.domain.naming import run_name
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def test_delete_cancels_the_agent_and_frees_the_issue(control_plane, kube_client, crds, namespace, pg_url):
    engine = make_engine(pg_url)
    objects = client.CustomObjectsApi(kube_client)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
                operator_thread(stack.deps, namespace):
            issue_id, run = stack.ticket()
            wait_phase(kube_client, namespace, run, "WaitingApproval")
            stack.decide(run, "approve", "alice")
            wait_phase(kube_client, namespace, run, "AgentRunning")
            assert stack.jobs(run) == [f"{run}-a1"]
            assert "foundry.dev/finalizer" in stack.run(run)["metadata"]["finalizers"]

            objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, run)

            def gone() -> bool:
                try:
                    stack.run(run)
                except client.ApiException as err:
                    return err.status == 404
                return False

            wait_for(gone, timeout=20, what="the run to be deleted")

        assert stack.jobs(run) == []  # the agent was cancelled
        row = claims.get_run(engine, namespace, run)
        assert row.phase == "Stopped" and row.finished_at is not None
        assert claims.active_run(engine, "linear", issue_id) is None
        # The slot is free: the ticket's next revision makes a new attempt, not an attach.
        again = claims.claim_run(engine, tracker="linear", issue_id=issue_id, issue_key=row.issue_key,
                                 namespace=namespace, ticket_updated_at=row.ticket_updated_at + timedelta(minutes=1),
                                 name_for=lambda n: run_name("linear", issue_id, n))
        assert (again.status, again.attempt) == ("created", 2), again
    finally:
        engine.dispose()
