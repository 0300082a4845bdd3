"""The operator drives one run from a ticket to a merged PR, through a CI
failure and a retry (real kopf, real API server, real PostgreSQL, the local
Linear and GitHub servers; Jobs are finished by patching their status, since
no kubelet runs)."""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes import client

from foundry.db import audit, claims
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _kubectl_get(control_plane, namespace: str) -> str:
    return subprocess.run([str(control_plane.kubectl), f"--kubeconfig={control_plane.kubeconfig}", "get",
                           "foundryruns", "-n", namespace], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def test_ticket_to_merged_pr_through_one_ci_failure(control_plane, kube_client, crds, namespace, engine, caplog):
    caplog.set_level("INFO", logger="foundry.operator")
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.ticket()
        waiting = wait_phase(kube_client, namespace, run, "WaitingApproval")
        assert waiting["status"]["repo"] == "app"
        assert waiting["status"]["approvals"]["summary"] == "0/1"
        assert stack.comment_purposes(issue_id) == ["approval_request"]
        assert stack.jobs() == []  # nothing runs before a human approves
        header, row = _kubectl_get(control_plane, namespace).splitlines()
        assert header.split()[:6] == ["NAME", "ISSUE", "PHASE", "REPO", "APPROVALS", "PR"]
        assert row.split()[:5] == [run, waiting["spec"]["issueKey"], "WaitingApproval", "app", "0/1"]

        stack.decide(run, "approve", "alice")
        wait_phase(kube_client, namespace, run, "AgentRunning")
        assert stack.jobs(run) == [f"{run}-a1"]

        # The agent pushes, opens the PR and exits; then CI fails on its head.
        first = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        number = stack.open_pr(run)
        wait_phase(kube_client, namespace, run, "PROpen")
        stack.finish_job(f"{run}-a1")
        stack.ci(first, "failure")
        # Attempt 2 on the same branch, keyed by the failing head.
        remediating = wait_for(lambda: (body := stack.run(run))["status"].get("agent", {}).get("attempt") == 2
                               and body, timeout=30, what="attempt 2")
        assert remediating["status"]["phase"] == "AgentRunning"
        assert remediating["status"]["remediations"] == {first: 2}
        assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]

        second = stack.push(run, {"app/test_health.py": "def test_ok():\n    assert True\n"})
        stack.ci(second, "success")
        stack.finish_job(f"{run}-a2")
        opened = wait_phase(kube_client, namespace, run, "PROpen")
        assert opened["status"]["pr"]["number"] == number and opened["status"]["pr"]["headSha"] == second

        stack.merge(number)
        done = wait_phase(kube_client, namespace, run, "Complete", timeout=30)
        row = _kubectl_get(control_plane, namespace).splitlines()[1].split()
        assert row[2:6] == ["Complete", "app", "1/1", str(number)], row

    # One Job per attempt, one comment per purpose.
    assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    assert [(j["attempt"], j["state"]) for j in done["status"]["agent"]["jobs"]] == [(1, "succeeded"),
                                                                                     (2, "succeeded")]
    assert {c["type"]: c["status"] for c in done["status"]["conditions"]}["Complete"] == "True"
    assert stack.linear.issue_json(issue_id)["state"]["name"] == "Done"

    # The database row and its audit trail tell the whole story, and the chain verifies.
    row = claims.get_run(engine, namespace, run)
    assert row.phase == "Complete" and row.finished_at is not None
    events = audit.audit_events(engine, row.id)
    phases = [e.payload["to"] for e in events if e.kind == "phase"]
    assert phases == ["Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen", "AgentRunning", "PROpen",
                      "Complete"], phases
    assert [e.kind for e in events].count("phase") == len(phases)
    assert audit.verify_audit_chain(engine, row.id)

    # The operator's log says the same, as fields a log pipeline can filter on (--log-format json).
    from foundry.jsonlog import JsonFormatter

    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if getattr(r, "fields", None)]
    mine = [(line["from"], line["to"]) for line in lines if line.get("run") == run]
    assert mine[0] == ("Pending", "Analysing") and mine[-1] == ("PROpen", "Complete"), mine

    # What `kubectl describe` shows: an Event for each transition.
    reasons = [e.reason for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
               if e.involved_object.name == run]
    for reason in ("Claimed", "Planned", "ApprovalsSatisfied", "AgentStarted", "Remediating", "PROpened", "Merged"):
        assert reason in reasons, reasons
