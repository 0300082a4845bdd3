"""Create-or-attach of FoundryRuns and FoundryApprovals, against the real API server.

The pure part checks the manifests; the rest proves the design's first guard:
however many callers race, the API server keeps exactly one object and every
caller ends up holding the same one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes import client

from foundry.domain.naming import InvalidNameInput, approval_name, run_name
from foundry.kube.approvals import build_approval_manifest, create_or_attach_approval
from foundry.kube.attach import AttachResult
from foundry.kube.errors import AccessDenied, IdentityConflict, ObjectRejected
from foundry.kube.runs import (
    LABEL_ATTEMPT,
    LABEL_ISSUE_ID,
    LABEL_ISSUE_KEY,
    LABEL_TRACKER,
    TicketSnapshot,
    Trigger,
    build_run_manifest,
    create_or_attach,
)
from tests.support.kubeutil import client_with_token, ensure_service_account, service_account_token

ISSUE_ID = "3f0c2b1e-6a57-4c1d-9d7e-1b2a3c4d5e6f"
UPDATED = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)


def _ticket(issue_id: str = ISSUE_ID, key: str = "ACME-42", **extra) -> TicketSnapshot:
    return TicketSnapshot("linear", issue_id, key, **extra)


# --- pure: manifests ----------------------------------------------------------


def test_run_manifest_carries_identity_snapshot_and_labels():
    ticket = _ticket(
        title="Retry failed payouts",
        description="Payouts that fail with 503 should retry.",
        url="https://linear.app/acme/issue/ACME-42",
        labels=("foundry", "backend"),
        state="Ready for Foundry",
        team_key="ACME",
        updated_at=UPDATED,
        priority=2,
    )
    trigger = Trigger("webhook", delivery_id="d-1", actor="user-7", received_at=UPDATED + timedelta(seconds=3))
    m = build_run_manifest(ticket, 2, trigger, namespace="foundry")

    assert m["apiVersion"] == "foundry.dev/v1alpha1" and m["kind"] == "FoundryRun"
    assert m["metadata"]["name"] == run_name("linear", ISSUE_ID, 2)
    assert m["metadata"]["namespace"] == "foundry"
    assert m["metadata"]["labels"] == {
        LABEL_TRACKER: "linear",
        LABEL_ISSUE_ID: ISSUE_ID,
        LABEL_ISSUE_KEY: "ACME-42",
        LABEL_ATTEMPT: "2",
    }
    # Made with the operator's finalizer, so the operator need not write metadata before acting.
    assert m["metadata"]["finalizers"] == ["foundry.dev/finalizer"]
    spec = m["spec"]
    assert (spec["tracker"], spec["issueId"], spec["issueKey"], spec["attempt"]) == ("linear", ISSUE_ID, "ACME-42", 2)
    assert spec["ticket"]["updatedAt"] == "2025-03-01T09:30:00Z"
    assert spec["ticket"]["labels"] == ["foundry", "backend"]
    assert spec["trigger"] == {"source": "webhook", "deliveryId": "d-1", "actor": "user-7", "receivedAt": "2025-03-01T09:30:03Z"}


def test_run_manifest_omits_unknown_fields_instead_of_nulls():
    m = build_run_manifest(_ticket(), 1)
    assert "ticket" not in m["spec"] and "trigger" not in m["spec"] and "namespace" not in m["metadata"]
    m = build_run_manifest(_ticket(title="only a title"), 1, Trigger("manual"))
    assert m["spec"]["ticket"] == {"title": "only a title"}
    assert m["spec"]["trigger"] == {"source": "manual"}


def test_issue_key_is_a_label_not_the_identity():
    # The same issue after moving from team ACME to team PAY keeps its run name.
    before = build_run_manifest(_ticket(key="ACME-42"), 1)
    after = build_run_manifest(_ticket(key="PAY-7"), 1)
    assert before["metadata"]["name"] == after["metadata"]["name"]
    assert after["metadata"]["labels"][LABEL_ISSUE_KEY] == "PAY-7"


def test_label_for_an_issue_id_that_is_not_label_safe():
    m = build_run_manifest(_ticket(issue_id="gid://tracker/Issue/42"), 1)
    value = m["metadata"]["labels"][LABEL_ISSUE_ID]
    assert value != "gid://tracker/Issue/42" and len(value) <= 63 and "/" not in value


@pytest.mark.parametrize(
    ("ticket", "attempt", "trigger", "error", "fragment"),
    [
        (_ticket(key="acme-42"), 1, None, ValueError, "issue_key must look like ACME-42"),
        (_ticket(), 0, None, InvalidNameInput, "attempt"),
        (_ticket(issue_id="has space"), 1, None, InvalidNameInput, "issue_id"),
        (_ticket(), 1, Trigger("cron"), ValueError, "trigger.source"),
        (_ticket(updated_at=datetime(2025, 1, 1)), 1, None, ValueError, "no timezone"),
    ],
)
def test_run_manifest_rejects_bad_input_before_any_round_trip(ticket, attempt, trigger, error, fragment):
    with pytest.raises(error, match=fragment):
        build_run_manifest(ticket, attempt, trigger)


def test_approval_manifest():
    run = run_name("linear", ISSUE_ID, 1)
    m = build_approval_manifest(run, "approve", "alice", "kubernetes", "looks safe", namespace="foundry")
    assert m["metadata"]["name"] == approval_name(run, "approve", "alice")
    assert m["spec"] == {"run": run, "decision": "approve", "approver": "alice", "source": "kubernetes", "comment": "looks safe"}
    with pytest.raises(ValueError, match="source"):
        build_approval_manifest(run, "approve", "alice", "email")
    with pytest.raises(InvalidNameInput, match="decision"):
        build_approval_manifest(run, "ok", "alice", "linear")


# --- against the real API server -----------------------------------------------

def _runs(api: client.ApiClient, namespace: str) -> list[dict]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryruns"
    )["items"]


def _merge_patch(api: client.ApiClient, namespace: str, plural: str, name: str, body: dict) -> dict:
    return client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, plural, name, body, _content_type="application/merge-patch+json"
    )


@pytest.mark.kube
def test_create_then_attach(kube_client, crds, namespace):
    manifest = build_run_manifest(_ticket(title="first"), 1, Trigger("webhook", delivery_id="d-1"))
    first = create_or_attach(kube_client, namespace, manifest)
    assert first.created and first.name == manifest["metadata"]["name"] and first.uid

    # A later delivery for the same issue: different snapshot, same identity.
    again = build_run_manifest(_ticket(title="edited", key="PAY-7"), 1, Trigger("webhook", delivery_id="d-2"))
    second = create_or_attach(kube_client, namespace, again)
    assert not second.created
    assert (second.name, second.uid) == (first.name, first.uid)
    assert second.object["spec"]["ticket"]["title"] == "first"  # the winner's object, unchanged
    assert len(_runs(kube_client, namespace)) == 1

    # The next attempt is a different object.
    third = create_or_attach(kube_client, namespace, build_run_manifest(_ticket(), 2))
    assert third.created and third.uid != first.uid


@pytest.mark.kube
def test_a_foreign_object_under_our_name_is_an_error(kube_client, crds, namespace):
    ours = build_run_manifest(_ticket(), 1)
    squatter = build_run_manifest(_ticket(issue_id="someone-else"), 1)
    squatter["metadata"]["name"] = ours["metadata"]["name"]
    create_or_attach(kube_client, namespace, squatter)

    with pytest.raises(IdentityConflict) as info:
        create_or_attach(kube_client, namespace, ours)
    message = str(info.value)
    assert f"FoundryRun {namespace}/{ours['metadata']['name']} already exists" in message
    assert "'someone-else'" in message and repr(ISSUE_ID) in message


# A second process racing the test's own threads. It builds its client from the
# kubeconfig (as another bridge replica would), reports ready, waits for "go"
# on stdin so both processes fire together, and prints one JSON line per call.
_WORKER = r"""
import json, sys, threading
from kubernetes import config
from foundry.kube.runs import create_or_attach
kubeconfig, namespace, manifest, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
api = config.new_client_from_config(config_file=kubeconfig)
api.configuration.connection_pool_maxsize = n
api.rest_client.pool_manager.connection_pool_kw["maxsize"] = n
go = threading.Event()
out, lock = [], threading.Lock()
def call():
    go.wait()
    try:
        r = create_or_attach(api, namespace, manifest)
        row = {"name": r.name, "uid": r.uid, "created": r.created}
    except Exception as exc:
        row = {"error": repr(exc)}
    with lock:
        out.append(row)
threads = [threading.Thread(target=call) for _ in range(n)]
for t in threads: t.start()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for t in threads: t.join()
for row in out: print(json.dumps(row))
"""


@pytest.mark.kube
@pytest.mark.slow
def test_fifty_concurrent_callers_get_one_object(control_plane, kube_client, crds, namespace):
    in_process, in_worker = 35, 15
    manifest = build_run_manifest(_ticket(title="race"), 1, Trigger("webhook"))
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(control_plane.kubeconfig), namespace, json.dumps(manifest), str(in_worker)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read()

        api = control_plane.api_client()
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = in_process
        go = threading.Barrier(in_process + 1)
        results: list[AttachResult | BaseException] = []
        lock = threading.Lock()

        def call() -> None:
            go.wait()
            try:
                outcome: AttachResult | BaseException = create_or_attach(api, namespace, manifest)
            except BaseException as exc:  # recorded and asserted on below
                outcome = exc
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=call) for _ in range(in_process)]
        for t in threads:
            t.start()
        worker.stdin.write("go\n")
        worker.stdin.flush()
        go.wait()
        for t in threads:
            t.join(timeout=60)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err

    remote = [json.loads(line) for line in out.splitlines() if line.strip()]
    errors = [r for r in results if isinstance(r, BaseException)] + [r for r in remote if "error" in r]
    assert errors == []
    calls = [(r.name, r.uid, r.created) for r in results] + [(r["name"], r["uid"], r["created"]) for r in remote]
    assert len(calls) == in_process + in_worker == 50

    objects = _runs(kube_client, namespace)
    assert len(objects) == 1
    only = objects[0]["metadata"]
    assert {(name, uid) for name, uid, _ in calls} == {(only["name"], only["uid"])}
    assert sum(created for _, _, created in calls) == 1
    api.close()


@pytest.mark.kube
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda m: m["spec"].update(issueKey="acme-42"), 'spec.issueKey: Invalid value: "acme-42": spec.issueKey must look like ACME-42'),
        (lambda m: m["spec"].update(attempt=0), "spec.attempt: Invalid value: 0: spec.attempt in body should be greater than or equal to 1"),
        (lambda m: m["spec"].update(tracker="jira"), 'spec.tracker: Unsupported value: "jira": supported values: "linear"'),
        (lambda m: m["spec"].update(ticket={"url": "ftp://x"}), "spec.ticket.url must be an http(s) URL"),
        (lambda m: m["spec"].update(trigger={"source": "cron"}), 'spec.trigger.source: Unsupported value: "cron"'),
        (lambda m: m["spec"].update(ticket={"updatedAt": "yesterday"}), "spec.ticket.updatedAt"),
        (lambda m: m["spec"].update(colour="red"), 'unknown field "spec.colour"'),
        (lambda m: m["spec"].pop("issueKey"), "spec.issueKey: Required value"),
        (lambda m: m["metadata"].update(name="x" * 53), "metadata.name must be at most 52 characters"),
    ],
)
def test_schema_rejects_bad_specs_readably(kube_client, crds, namespace, change, fragment):
    manifest = build_run_manifest(_ticket(), 1)
    change(manifest)
    with pytest.raises(ObjectRejected) as info:
        create_or_attach(kube_client, namespace, manifest)
    assert fragment in info.value.message
    assert info.value.message.count("\n") == 0  # one line a person can read
    assert _runs(kube_client, namespace) == []


@pytest.mark.kube
def test_cel_keeps_the_run_identity_immutable(kube_client, crds, namespace):
    run = create_or_attach(kube_client, namespace, build_run_manifest(_ticket(), 1))
    # (tracker carries the same rule; its enum has a single value today, so
    # no change of it can get past the enum to reach the rule.)
    for field, value in [("issueId", "another-issue"), ("attempt", 2)]:
        with pytest.raises(client.ApiException) as info:
            _merge_patch(kube_client, namespace, "foundryruns", run.name, {"spec": {field: value}})
        assert info.value.status == 422
        assert f"spec.{field} is immutable; it is part of the run's identity" in info.value.body

    # The key is not identity: moving teams may update it.
    patched = _merge_patch(kube_client, namespace, "foundryruns", run.name, {"spec": {"issueKey": "PAY-7"}})
    assert patched["spec"]["issueKey"] == "PAY-7"


@pytest.mark.kube
def test_approvals_are_recorded_once_and_immutable(kube_client, crds, namespace):
    run = create_or_attach(kube_client, namespace, build_run_manifest(_ticket(), 1)).name
    first = create_or_attach_approval(kube_client, namespace, build_approval_manifest(run, "approve", "alice", "kubernetes", "ok"))
    # The same command again, even with another comment, is the same approval.
    again = create_or_attach_approval(kube_client, namespace, build_approval_manifest(run, "approve", "alice", "kubernetes", "ok!!"))
    assert first.created and not again.created and again.uid == first.uid
    # Another approver is another object.
    bob = create_or_attach_approval(kube_client, namespace, build_approval_manifest(run, "approve", "bob", "kubernetes"))
    assert bob.created and bob.uid != first.uid

    with pytest.raises(client.ApiException) as info:
        _merge_patch(kube_client, namespace, "foundryapprovals", first.name, {"spec": {"decision": "reject"}})
    assert "spec is immutable; record a new decision instead of editing this one" in info.value.body

    bad = build_approval_manifest(run, "approve", "carol", "kubernetes")
    bad["spec"]["decision"] = "maybe"
    with pytest.raises(ObjectRejected, match='spec.decision: Unsupported value: "maybe"'):
        create_or_attach_approval(kube_client, namespace, bad)


@pytest.mark.kube
def test_rbac_is_enforced_for_service_accounts(kube_client, crds, namespace):
    ensure_service_account(kube_client, namespace, "bridge")
    as_bridge = client_with_token(kube_client, service_account_token(kube_client, namespace, "bridge", 600))
    manifest = build_run_manifest(_ticket(), 1)
    try:
        with pytest.raises(AccessDenied) as info:
            create_or_attach(as_bridge, namespace, manifest)
        assert info.value.status == 403
        assert f'User "system:serviceaccount:{namespace}:bridge" cannot create resource "foundryruns"' in info.value.message
        assert _runs(kube_client, namespace) == []

        rbac = client.RbacAuthorizationV1Api(kube_client)
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="foundry-runs"),
                rules=[client.V1PolicyRule(api_groups=["foundry.dev"], resources=["foundryruns"], verbs=["create", "get"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="bridge-runs"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="foundry-runs"),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="bridge", namespace=namespace)],
            ),
        )
        # The authorizer reads roles from an informer cache; allow it to catch up.
        deadline = time.monotonic() + 15
        while True:
            try:
                result = create_or_attach(as_bridge, namespace, manifest)
                break
            except AccessDenied:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert result.created
        # The Role grants only foundryruns: approvals are still refused.
        with pytest.raises(AccessDenied, match='cannot create resource "foundryapprovals"'):
            create_or_attach_approval(as_bridge, namespace, build_approval_manifest(result.name, "approve", "x", "linear"))
    finally:
        as_bridge.close()
