"""The bridge's part of "approval binds to the plan", against the real API server and PostgreSQL,
on both intake paths (the threaded one in-process, the lean one as a real `foundry bridge` process):

- a `/foundry approve` or `/foundry replan` comment records a FoundryApproval stamped with
  the run's current status.plan.hash (unstamped while the run has none), and one naming
  another plan records nothing;
- a Linear Issue update that changes the title or description of a run not yet approved
  merge-patches its spec.ticket once (the operator then re-plans); the same delivery again,
  a second copy, an older delivery or a run already approved change nothing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from foundry.db.engine import create_schema, make_engine
from foundry.kube.approvals import LABEL_PLAN
from foundry.kube.approvals import PLURAL as APPROVALS
from foundry.kube.crds import GROUP, VERSION
from foundry.kube.runs import LABEL_ISSUE_ID
from foundry.kube.runs import PLURAL as RUNS
from tests.support.bridge_kit import BridgeProcess, encode, linear_comment, linear_headers, linear_issue
from tests.support.bridge_thread import BridgeThread, bridge_settings

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

SECRET = "replan-linear-secret"
PLAN_A = "sha256:" + "0123456789abcdef" * 4
T0, T1, T2 = "2025-01-01T10:00:00.000Z", "2025-01-01T11:00:00.000Z", "2025-01-01T12:00:00.000Z"


@pytest.fixture(params=["threaded", "lean"])
def bridge_url(request, control_plane, crds, namespace: str, pg_url: str, tmp_path: Path) -> Iterator[str]:
    engine = make_engine(pg_url)
    create_schema(engine)
    engine.dispose()
    if request.param == "threaded":
        with BridgeThread(bridge_settings(namespace, pg_url, control_plane.kubeconfig, linear_secret=SECRET)) as bridge:
            yield bridge.url
        return
    env = {"KUBECONFIG": str(control_plane.kubeconfig), "FOUNDRY_NAMESPACE": namespace,
           "FOUNDRY_DATABASE_URL": pg_url, "FOUNDRY_LINEAR_WEBHOOK_SECRET": SECRET,
           "FOUNDRY_GITHUB_WEBHOOK_SECRET": "unused", "FOUNDRY_BRIDGE_WORKERS": "2", "FOUNDRY_BRIDGE_LEAN": "1"}
    with BridgeProcess(env, log_path=tmp_path / "bridge.log") as bridge:
        yield bridge.url


def send(url: str, payload: dict[str, Any], delivery_id: str | None = None) -> tuple[int, dict[str, Any]]:
    body = encode(payload)
    event = payload["type"]
    request = urllib.request.Request(f"{url}/webhooks/linear", data=body, method="POST",
                                     headers=linear_headers(body, SECRET, delivery_id or str(uuid.uuid4()), event=event))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def the_run(kube_client, namespace: str, issue_id: str) -> dict[str, Any]:
    items = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, RUNS, label_selector=f"{LABEL_ISSUE_ID}={issue_id}")["items"]
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return items[0]


def set_status(kube_client, namespace: str, name: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, RUNS, name, {"status": status})


def approvals(kube_client, namespace: str) -> list[dict[str, Any]]:
    return client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, APPROVALS)["items"]


def started(url: str, kube_client, namespace: str, issue_id: str, key: str, **ticket: Any) -> str:
    status, answer = send(url, linear_issue(issue_id, key, action="create", **ticket))
    assert (status, answer["status"]) == (200, "created"), answer
    return the_run(kube_client, namespace, issue_id)["metadata"]["name"]


def test_a_changed_ticket_is_written_into_the_unapproved_run_once(bridge_url, kube_client, namespace):
    issue = f"iss-{uuid.uuid4().hex[:8]}"
    name = started(bridge_url, kube_client, namespace, issue, "ACME-71", updated_at=T1,
                   title="Fix the login redirect", description="Send users back after login.")
    set_status(kube_client, namespace, name, {"phase": "WaitingApproval", "plan": {"hash": PLAN_A, "revision": 1}})

    update = linear_issue(issue, "ACME-71", updated_at=T2, title="Fix the login redirect for SSO users",
                          description="")
    delivery = str(uuid.uuid4())
    assert send(bridge_url, update, delivery) == (200, {"status": "updated", "run": name})
    run = the_run(kube_client, namespace, issue)
    ticket, version = run["spec"]["ticket"], run["metadata"]["resourceVersion"]
    # The new text, and the description Linear no longer has is gone (not left from the old ticket).
    assert ticket["title"] == "Fix the login redirect for SSO users" and "description" not in ticket
    assert ticket["updatedAt"] == "2025-01-01T12:00:00Z" and ticket["labels"] == ["foundry"]

    # The same delivery retried, another copy of the same update, and an older one arriving late: nothing changes.
    assert send(bridge_url, update, delivery)[1]["status"] == "duplicate"
    assert send(bridge_url, update)[1]["status"] == "attached"
    stale = linear_issue(issue, "ACME-71", updated_at=T0, title="An older title")
    assert send(bridge_url, stale)[1]["status"] == "attached"
    assert the_run(kube_client, namespace, issue)["metadata"]["resourceVersion"] == version


def test_an_approved_run_keeps_its_ticket(bridge_url, kube_client, namespace):
    issue = f"iss-{uuid.uuid4().hex[:8]}"
    name = started(bridge_url, kube_client, namespace, issue, "ACME-72", updated_at=T1)
    set_status(kube_client, namespace, name, {"phase": "AgentRunning", "plan": {"hash": PLAN_A, "revision": 1}})
    version = the_run(kube_client, namespace, issue)["metadata"]["resourceVersion"]
    answer = send(bridge_url, linear_issue(issue, "ACME-72", updated_at=T2, title="Something else entirely"))
    assert answer == (200, {"status": "attached", "run": name})
    assert the_run(kube_client, namespace, issue)["metadata"]["resourceVersion"] == version


def test_comments_record_decisions_stamped_with_the_current_plan(bridge_url, kube_client, namespace):
    issue = f"iss-{uuid.uuid4().hex[:8]}"
    name = started(bridge_url, kube_client, namespace, issue, "ACME-73", updated_at=T1)

    # No plan hash yet: the approval names none (the operator counts it while there is one plan only).
    assert send(bridge_url, linear_comment(issue, "/foundry approve early"))[1]["status"] == "applied"
    [early] = approvals(kube_client, namespace)
    assert "planHash" not in early["spec"] and LABEL_PLAN not in early["metadata"]["labels"]

    set_status(kube_client, namespace, name, {"phase": "WaitingApproval", "plan": {"hash": PLAN_A, "revision": 2}})
    assert send(bridge_url, linear_comment(issue, "/foundry approve looks right"))[1]["status"] == "applied"
    assert send(bridge_url, linear_comment(issue, "/foundry replan the ticket says SSO now"))[1]["status"] == "applied"
    # Naming the current plan by its short hash is the same; naming another plan records nothing.
    assert send(bridge_url, linear_comment(issue, "/foundry approve 0123456789ab", email="bob@example.com",
                                           user_id="user-bob"))[1]["status"] == "applied"
    status, answer = send(bridge_url, linear_comment(issue, "/foundry approve ffffffffffff", email="carol@example.com",
                                                     user_id="user-carol"))
    assert status == 200 and answer["status"] == "ignored" and "not the run's current plan" in answer["reason"]

    stamped = sorted((a["spec"]["decision"], a["spec"]["approver"], a["spec"].get("planHash"),
                      a["metadata"]["labels"].get(LABEL_PLAN), a["spec"].get("comment"))
                     for a in approvals(kube_client, namespace) if a["metadata"]["uid"] != early["metadata"]["uid"])
    assert stamped == [
        ("approve", "alice@example.com", PLAN_A, "0123456789ab", "looks right"),
        ("approve", "bob@example.com", PLAN_A, "0123456789ab", None),
        ("replan", "alice@example.com", PLAN_A, "0123456789ab", "the ticket says SSO now"),
    ]
