"""The diff is judged again on every new head: a change larger than policy
allows, or one that reaches a risk area nobody approved, waits in
ReviewRequired with the reason, and a later head that fixes it moves the run
back to PROpen (real kopf, real API server, real PostgreSQL, local GitHub)."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _review(body: dict) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == "ReviewRequired")


def _warnings(kube_client, namespace: str, run: str) -> list[str]:
    return [e.reason for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
            if e.involved_object.name == run and e.type == "Warning"]


def test_too_many_files_wait_for_review_until_a_smaller_head(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace, stack_config(max_changed_files=2)) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        files = {f"app/part_{i}.py": f"PART = {i}\n" for i in range(4)}
        stack.push(run, files)
        number = stack.open_pr(run)
        held = wait_phase(kube_client, namespace, run, "ReviewRequired")
        cond = _review(held)
        assert cond["status"] == "True" and cond["reason"] == "DiffNeedsReview"
        assert "4 files changed, more than the limit of 2" in cond["message"], cond
        assert held["status"]["pr"]["number"] == number
        # The Event follows the status write (decision 0004): wait for it.
        wait_for(lambda: "DiffNeedsReview" in _warnings(kube_client, namespace, run), timeout=15, what="the DiffNeedsReview Event")

        # The agent trims its change: the new head is judged afresh.
        head = stack.push(run, {"app/part_2.py": None, "app/part_3.py": None}, "foundry: smaller change")
        opened = wait_phase(kube_client, namespace, run, "PROpen", timeout=30)
        assert opened["status"]["pr"]["headSha"] == head
        assert _review(opened)["status"] == "False"

    assert stack.comment_purposes(issue_id).count("pr_opened") == 1


def test_a_risk_area_nobody_approved_waits_for_review(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, operator_thread(stack.deps, namespace):
        _, run = stack.agent_running()
        assert "migrations" not in (stack.run(run)["status"].get("riskAreas") or [])
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n",
                         "app/migrations/0002_add_health.sql": "ALTER TABLE service ADD COLUMN healthy bool;\n"})
        stack.open_pr(run)
        held = wait_phase(kube_client, namespace, run, "ReviewRequired")
        cond = _review(held)
        assert cond["reason"] == "DiffNeedsReview"
        assert "migrations, which the approval did not cover" in cond["message"], cond
        # Nothing merges it on Foundry's behalf, and no new attempt starts.
        assert stack.jobs(run) == [f"{run}-a1"]
