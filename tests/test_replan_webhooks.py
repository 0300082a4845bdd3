"""Approval binds to the plan, through the real webhook wiring: the Linear stand-in sends signed
webhooks to the real bridge, the real kopf operator moves the run (real API server, real
PostgreSQL, the deterministic planner). Approve plan A, then edit the ticket: the bridge writes
the new text into spec.ticket, the operator re-plans to B, and A's approval no longer counts;
approvals of B (stamped by the bridge) do.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from foundry.kube.crds import GROUP, VERSION
from tests.support.operator_kit import wait_for, wait_phase
from tests.support.operator_stack import READY_DESCRIPTION
from tests.test_operator_e2e_webhooks import STEP, _comment, _labelled_ticket, _stand

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _stamps(stack, run: str) -> list[tuple[str, str, str | None]]:
    items = client.CustomObjectsApi(stack.api).list_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, "foundryapprovals", label_selector=f"foundry.dev/run={run}")["items"]
    return sorted((i["spec"]["decision"], i["spec"]["approver"], i["spec"].get("planHash")) for i in items)


def _plan(stack, run: str) -> dict[str, Any]:
    return (stack.run(run).get("status") or {}).get("plan") or {}


def test_an_edited_ticket_replans_and_only_approvals_of_the_new_plan_count(control_plane, kube_client, crds,
                                                                            namespace, engine, pg_url):
    with _stand(control_plane, engine, pg_url, namespace, approvals_required=2) as stack:
        bob_id = stack.linear.add_user("Bob", "bob@example.com")
        issue_id, run = _labelled_ticket(stack, "Add a health endpoint to the service", READY_DESCRIPTION)
        wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=STEP)
        plan_a = _plan(stack, run)
        assert plan_a["revision"] == 1 and plan_a["hash"].startswith("sha256:")

        _comment(stack, issue_id, "/foundry approve", stack.alice_id)
        assert _stamps(stack, run) == [("approve", "alice@example.com", plan_a["hash"])]
        wait_for(lambda: stack.run(run)["status"]["approvals"]["received"] == 1, timeout=STEP,
                 what="Alice's approval of plan A counted")

        # The ticket changes before the plan is approved: the bridge writes it into the run, once.
        stack.linear.update_issue(issue_id, actor_id=stack.alice_id, title="Add a health and a readiness endpoint",
                                  description=READY_DESCRIPTION + "\n- GET /readyz answers 200 once the database answers\n")
        plan_b = wait_for(lambda: (p := _plan(stack, run)).get("revision") == 2 and p, timeout=STEP,
                          what="the operator's re-plan after the ticket changed")
        assert plan_b["hash"] != plan_a["hash"]
        assert stack.run(run)["spec"]["ticket"]["title"] == "Add a health and a readiness endpoint"
        waiting = wait_for(lambda: (b := stack.run(run))["status"]["approvals"]["received"] == 0 and b,
                           timeout=STEP, what="plan A's approval no longer counted")
        assert waiting["status"]["phase"] == "WaitingApproval"

        # Bob approves B: one of two, since Alice's approval was of A.
        _comment(stack, issue_id, "/foundry approve", bob_id)
        half = wait_for(lambda: (b := stack.run(run))["status"]["approvals"]["received"] == 1 and b,
                        timeout=STEP, what="Bob's approval of plan B counted")
        assert half["status"]["phase"] == "WaitingApproval" and stack.jobs(run) == []

        # Alice approves again: a new object (stamped B), not a 409 onto her approval of A.
        _comment(stack, issue_id, "/foundry approve", stack.alice_id)
        wait_phase(kube_client, namespace, run, "AgentRunning", timeout=STEP)
        assert _stamps(stack, run) == sorted([("approve", "alice@example.com", plan_a["hash"]),
                                              ("approve", "alice@example.com", plan_b["hash"]),
                                              ("approve", "bob@example.com", plan_b["hash"])])


def test_a_replan_comment_makes_a_new_plan_revision(control_plane, kube_client, crds, namespace, engine, pg_url):
    with _stand(control_plane, engine, pg_url, namespace) as stack:
        issue_id, run = _labelled_ticket(stack, "Add a health endpoint to the service", READY_DESCRIPTION)
        wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=STEP)
        plan_a = _plan(stack, run)
        _comment(stack, issue_id, "/foundry replan the endpoint should also report the version", stack.alice_id)
        assert _stamps(stack, run) == [("replan", "alice@example.com", plan_a["hash"])]
        wait_for(lambda: _plan(stack, run).get("revision") == 2, timeout=STEP, what="the re-plan the comment asked for")
        assert stack.run(run)["status"]["phase"] == "WaitingApproval"
