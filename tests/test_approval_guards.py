"""Decisions that must not count, on the real API server with the real operator:
a Linear approval no Linear comment backs (made with the bridge's own
ServiceAccount, under the chart's admission policies), an approval made before
the plan it approves, a reject/stop from someone who may not, a FoundryApproval
without its run label, and a squatted comment marker. Each refusal is told:
status message, a Warning Event, one ticket comment."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest
from kubernetes import client

from foundry.connectors.marked_comments import find_markers
from foundry.kube.approvals import build_approval_manifest
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.helmchart import render
from tests.support.kubeutil import client_with_token, service_account_token
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

RELEASE = "guard"
BRIDGE_SA = f"{RELEASE}-foundry-bridge"


@contextmanager
def chart_policies(control_plane, kube_client, namespace: str) -> Iterator[client.ApiClient]:
    """The chart's approval admission policies, bound to `namespace`, and an API client
    acting as the chart's bridge ServiceAccount (allowed to create FoundryApprovals)."""
    objs = render(control_plane.helm, release=RELEASE, namespace=namespace,
                  values={"secrets": {"databaseUrl": "postgresql+psycopg://unused@127.0.0.1/unused"}},
                  show_only="templates/approval-policy.yaml")
    admission = client.AdmissionregistrationV1Api(kube_client)
    # Cluster-scoped: a name per namespace, so tests never share them.
    for o in objs:
        o["metadata"]["name"] = f"{o['metadata']['name']}-{namespace}"
        if o["kind"] == "ValidatingAdmissionPolicyBinding":
            o["spec"]["policyName"] = f"{o['spec']['policyName']}-{namespace}"
    policies = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
    bindings = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert len(policies) == 2 and len(bindings) == 2, [o["metadata"]["name"] for o in objs]
    for p in policies:
        admission.create_validating_admission_policy(p)
    for b in bindings:
        admission.create_validating_admission_policy_binding(b)
    core, rbac = client.CoreV1Api(kube_client), client.RbacAuthorizationV1Api(kube_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": BRIDGE_SA}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": BRIDGE_SA},
        "rules": [{"apiGroups": ["foundry.dev"], "resources": ["foundryapprovals"], "verbs": ["create", "get"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": BRIDGE_SA},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": BRIDGE_SA},
        "subjects": [{"kind": "ServiceAccount", "name": BRIDGE_SA, "namespace": namespace}]})
    bridge = client_with_token(kube_client, service_account_token(kube_client, namespace, BRIDGE_SA))
    try:
        yield bridge
    finally:
        bridge.close()
        for b in bindings:
            admission.delete_validating_admission_policy_binding(b["metadata"]["name"])
        for p in policies:
            admission.delete_validating_admission_policy(p["metadata"]["name"])


def _create(api: client.ApiClient, namespace: str, body: dict) -> dict:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryapprovals", body)


def _refused(api: client.ApiClient, namespace: str, body: dict, *, timeout: float = 20.0) -> str:
    """The API server's refusal of `body`; waits for the policies to take effect (they load asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            created = _create(api, namespace, body)
        except client.ApiException as err:
            assert err.status in (403, 422), err.body
            return err.body
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "foundry.dev", "v1alpha1", namespace, "foundryapprovals", created["metadata"]["name"])
        assert time.monotonic() < deadline, f"the API server kept accepting {body['metadata']}"
        time.sleep(0.2)


def _refusal_comments(stack: OperatorStack, issue_id: str) -> list[dict]:
    return [c for c in stack.linear.comments_json(issue_id)
            if any(p.startswith("refused.") for _, p in find_markers(c["body"]))]


def _message(stack: OperatorStack, run: str) -> str:
    return (stack.run(run).get("status") or {}).get("message") or ""


def _events(kube_client, namespace: str, run: str, reason: str) -> list:
    return [e for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
            if e.involved_object.name == run and e.reason == reason]


def test_a_forged_linear_approval_is_not_counted_and_the_ticket_says_why(
        control_plane, kube_client, crds, namespace, engine):
    with chart_policies(control_plane, kube_client, namespace) as bridge, \
            OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.ticket()
        wait_phase(kube_client, namespace, run, "WaitingApproval")

        # What the admission policy lets through: the bridge's ServiceAccount records a Linear
        # approval in alice's name. But no such comment exists in Linear.
        forged = build_approval_manifest(run, "approve", "alice@example.com", "linear", namespace=namespace,
                                         comment_id=str(uuid.uuid4()))
        wait_for(lambda: _try_create(bridge, namespace, forged), timeout=20, what="the bridge's create to pass")
        refused = wait_for(lambda: "Linear has no comment" in _message(stack, run) and stack.run(run),
                           timeout=30, what="the refusal in the run's status")
        assert refused["status"]["phase"] == "WaitingApproval"
        assert refused["status"]["approvals"]["received"] == 0
        assert "alice@example.com: Linear has no comment" in refused["status"]["message"]
        wait_for(lambda: _events(kube_client, namespace, run, "DecisionRefused"), timeout=10, what="the Event")
        told = wait_for(lambda: _refusal_comments(stack, issue_id), timeout=10, what="the ticket comment")
        assert "Linear has no comment" in told[0]["body"] and told[0]["user"]["id"] == stack.linear.bot

        # A real comment by bob carrying alice's name, and a forged stop: neither counts.
        bob = stack.linear.add_user("Bob", "bob@example.com")
        bobs = stack.linear.add_comment(issue_id, "/foundry approve", user_id=bob)
        _create(bridge, namespace, build_approval_manifest(run, "approve", "alice@example.com", "linear",
                                                           namespace=namespace, comment_id=bobs))
        _create(bridge, namespace, build_approval_manifest(run, "stop", "alice@example.com", "linear",
                                                           namespace=namespace, comment_id=str(uuid.uuid4())))
        wait_for(lambda: len(_refusal_comments(stack, issue_id)) == 3, timeout=30, what="three refusal comments")
        bodies = " ".join(c["body"] for c in _refusal_comments(stack, issue_id))
        assert f"Linear comment {bobs} was not written by 'alice@example.com'" in bodies
        assert "`stop` by alice@example.com" in bodies
        time.sleep(3)  # several resyncs (1 s): nothing is told twice, nothing moves
        assert len(_refusal_comments(stack, issue_id)) == 3
        assert stack.phase(run) == "WaitingApproval"

        # The real thing: alice writes the command in Linear, the bridge records it.
        real = stack.linear.add_comment(issue_id, "/foundry approve looks right", user_id=stack.alice_id)
        _create(bridge, namespace, build_approval_manifest(run, "approve", "alice@example.com", "linear",
                                                           namespace=namespace, comment_id=real))
        wait_phase(kube_client, namespace, run, "AgentRunning")
        assert len(_refusal_comments(stack, issue_id)) == 3


def _try_create(api: client.ApiClient, namespace: str, body: dict) -> bool:
    try:
        _create(api, namespace, body)
        return True
    except client.ApiException as err:
        if err.status == 403:  # the policies are still loading
            return False
        raise


def test_an_approval_made_before_its_plan_does_not_count(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        def pre_approve(_issue: str, run: str) -> None:
            # The run's name is computable: alice approves attempt 1 before it exists.
            stack.decide(run, "approve", "alice")
            time.sleep(1.2)  # Kubernetes timestamps have whole seconds

        issue_id, run = stack.ticket(before_run=pre_approve)
        waiting = wait_for(lambda: "before the plan it approves existed" in _message(stack, run) and stack.run(run),
                           timeout=30, what="the refusal")
        assert waiting["status"]["phase"] == "WaitingApproval"
        assert waiting["status"]["approvals"]["received"] == 0
        assert len(_refusal_comments(stack, issue_id)) == 1
        time.sleep(2)
        assert stack.phase(run) == "WaitingApproval"


def test_a_stop_by_someone_who_may_not_is_told_and_ignored(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        stack.decide(run, "stop", "mallory")
        told = wait_for(lambda: _refusal_comments(stack, issue_id), timeout=30, what="the refusal comment")
        assert "'mallory' (kubernetes) is not a configured approver" in told[0]["body"]
        wait_for(lambda: _events(kube_client, namespace, run, "DecisionRefused"), timeout=10, what="the Event")
        time.sleep(2)
        assert stack.phase(run) == "AgentRunning"
        assert len(_refusal_comments(stack, issue_id)) == 1


def test_a_squatted_marker_does_not_stop_foundrys_own_comment(control_plane, kube_client, crds, namespace, engine):
    from foundry.connectors.marked_comments import marker

    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        squat: dict[str, str] = {}

        def squat_marker(issue: str, run: str) -> None:
            squat["id"] = stack.linear.add_comment(issue, f"nothing to see\n\n{marker(run, 'approval_request')}",
                                                   user_id=stack.alice_id)

        issue_id, run = stack.ticket(before_run=squat_marker)
        waiting = wait_phase(kube_client, namespace, run, "WaitingApproval")
        plan_id = waiting["status"]["comments"]["approval_request"]
        assert plan_id != squat["id"]
        plan = next(c for c in stack.linear.comments_json(issue_id) if c["id"] == plan_id)
        assert plan["user"]["id"] == stack.linear.bot and "Risk areas" in plan["body"]


def test_an_approval_without_its_run_label_is_refused_by_the_api_server(control_plane, kube_client, crds, namespace):
    with chart_policies(control_plane, kube_client, namespace):
        body = build_approval_manifest("some-run", "approve", "foundry-admin", "kubernetes", namespace=namespace)
        del body["metadata"]["labels"]["foundry.dev/run"]
        message = _refused(kube_client, namespace, body)
        assert "a FoundryApproval needs the label foundry.dev/run=some-run" in message
        other = build_approval_manifest("some-run", "approve", "foundry-admin", "kubernetes", namespace=namespace)
        other["metadata"]["labels"]["foundry.dev/run"] = "another-run"
        assert "must name the run in spec.run (some-run)" in _refused(kube_client, namespace, other)


def test_a_linear_decision_without_its_comment_is_refused_by_the_crd(kube_client, crds, namespace):
    body = build_approval_manifest("some-run", "approve", "alice@example.com", "linear", namespace=namespace)
    with pytest.raises(client.ApiException) as err:
        _create(kube_client, namespace, body)
    assert err.value.status == 422 and "a decision from Linear needs spec.commentId" in err.value.body
