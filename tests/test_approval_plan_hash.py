"""A FoundryApproval names the plan it is about (spec.planHash) on the real API server:
the CRD takes the hash and replan, refuses a malformed hash or an edit,
`kubectl get fa` shows the short hash, `kubectl explain` documents it, and the
chart's admission policies admit the stamped decisions the CLI and the bridge make."""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes import client

from foundry.kube.approvals import PLURAL, build_approval_manifest, create_or_attach_approval
from foundry.kube.crds import GROUP, VERSION

pytestmark = pytest.mark.kube
A = "sha256:" + "0123456789abcdef" * 4
B = "sha256:" + "fedcba9876543210" * 4
RUN = "lin-plan-0123456789ab-1"


def _create(api, namespace, manifest):
    return client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)


def test_approving_plan_b_after_plan_a_is_a_second_object_and_repeating_is_a_409(kube_client, crds, namespace):
    on_a = create_or_attach_approval(kube_client, namespace, build_approval_manifest(
        RUN, "approve", "alice", "kubernetes", namespace=namespace, plan_hash=A))
    again = create_or_attach_approval(kube_client, namespace, build_approval_manifest(
        RUN, "approve", "alice", "kubernetes", namespace=namespace, plan_hash=A))
    on_b = create_or_attach_approval(kube_client, namespace, build_approval_manifest(
        RUN, "approve", "alice", "kubernetes", namespace=namespace, plan_hash=B))
    assert on_a.created and not again.created and again.name == on_a.name
    assert on_b.created and on_b.name != on_a.name
    assert on_a.object["spec"]["planHash"] == A and on_b.object["spec"]["planHash"] == B


def test_replan_is_a_decision_and_the_hash_is_frozen_and_well_formed(kube_client, crds, namespace):
    obj = _create(kube_client, namespace, build_approval_manifest(
        RUN, "replan", "alice", "kubernetes", namespace=namespace, plan_hash=A))
    assert obj["spec"]["decision"] == "replan"
    custom = client.CustomObjectsApi(kube_client)
    with pytest.raises(client.ApiException) as edit:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj["metadata"]["name"],
                                              {"spec": {"planHash": B}})
    assert edit.value.status == 422 and "immutable" in edit.value.body
    bad = build_approval_manifest(RUN, "approve", "bob", "kubernetes", namespace=namespace, plan_hash=A)
    bad["spec"]["planHash"] = "sha256:" + "A" * 64
    with pytest.raises(client.ApiException) as refused:
        _create(kube_client, namespace, bad)
    assert refused.value.status == 422 and "spec.planHash" in refused.value.body


def test_kubectl_get_shows_the_short_plan_hash(kube_client, crds, namespace):
    _create(kube_client, namespace, build_approval_manifest(
        RUN, "approve", "alice", "kubernetes", namespace=namespace, plan_hash=A))
    _create(kube_client, namespace, build_approval_manifest(RUN, "stop", "bob", "kubernetes", namespace=namespace))
    # What kubectl asks for: the server-side table of the CRD's printer columns.
    method, url, headers, body, _ = kube_client.param_serialize(
        "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, auth_settings=["BearerToken"])
    response = kube_client.call_api(method, url, headers, body)
    response.read()
    table = json.loads(response.data)
    names = [c["name"] for c in table["columnDefinitions"]]
    rows = {tuple(r["cells"])[names.index("Decision")]: r["cells"][names.index("Plan")] for r in table["rows"]}
    assert rows == {"approve": "0123456789ab", "stop": None}


def test_kubectl_explains_the_plan_hash_and_replan(control_plane, crds):
    def explain(field: str) -> str:
        proc = subprocess.run([str(control_plane.kubectl), f"--kubeconfig={control_plane.kubeconfig}", "explain",
                               f"foundryapproval.spec.{field}"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return " ".join(proc.stdout.split())

    assert "The plan the decision is about: the run's status.plan.hash" in explain("planHash")
    assert "replan asks for a new plan" in explain("decision")


def test_the_charts_admission_policies_still_admit_stamped_decisions(control_plane, kube_client, crds, namespace):
    from tests.test_approval_guards import _refused, chart_policies

    rbac = client.RbacAuthorizationV1Api(kube_client)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "alice"}, "rules": [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "delete"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "alice"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "alice"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})
    alice = control_plane.api_client(control_plane.user_token("alice"))
    with chart_policies(control_plane, kube_client, namespace) as bridge:
        # The policies are in force (they load asynchronously): a decision in bob's name is refused...
        forged = build_approval_manifest(RUN, "approve", "bob", "kubernetes", namespace=namespace, plan_hash=A)
        assert "must be your own username" in _refused(alice, namespace, forged)
        # ...and the stamped ones the CLI and the bridge make are admitted.
        _create(alice, namespace, build_approval_manifest(RUN, "approve", "alice", "kubernetes",
                                                          namespace=namespace, plan_hash=A))
        _create(alice, namespace, build_approval_manifest(RUN, "replan", "alice", "kubernetes",
                                                          namespace=namespace, plan_hash=A))
        for decision in ("approve", "replan"):
            _create(bridge, namespace, build_approval_manifest(RUN, decision, "alice@example.com", "linear",
                                                               namespace=namespace, comment_id="c-1", plan_hash=B))
    names = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    assert sorted((o["spec"]["decision"], o["spec"]["source"], o["spec"]["planHash"]) for o in names) == [
        ("approve", "kubernetes", A), ("approve", "linear", B), ("replan", "kubernetes", A), ("replan", "linear", B)]
