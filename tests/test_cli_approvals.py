"""`foundry approve|reject|stop|replan` record decisions as the authenticated Kubernetes user,
approve and replan stamped with the plan they are about."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from kubernetes import client

from foundry.cli.decisions import refusal, whoami
from foundry.cli.main import cli
from foundry.kube.crds import GROUP, VERSION
from foundry.kube.runs import TicketSnapshot, build_run_manifest, create_or_attach

pytestmark = pytest.mark.kube
UPDATED = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)


def test_refusal_only_for_final_phases():
    assert refusal("approve", "r", "WaitingApproval") is None
    assert refusal("stop", "r", None) is None  # no status yet: Pending, still active
    assert "Complete, which is final" in refusal("approve", "r", "Complete")
    assert refusal("approve", "r", "SomeFuturePhase") is None
    assert refusal("replan", "r", "WaitingApproval") is None and refusal("replan", "r", "Analysing") is None
    assert "can be re-planned" in refusal("replan", "r", "AgentRunning")


def _grant(api, namespace, user):
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": f"{user}-approver"},
        "rules": [
            {"apiGroups": [GROUP], "resources": ["foundryruns"], "verbs": ["get", "list"]},
            {"apiGroups": [GROUP], "resources": ["foundryapprovals"], "verbs": ["get", "list", "create"]},
        ],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": f"{user}-approver"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{user}-approver"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })


def _run(api, namespace, issue_id, key, phase=None):
    manifest = build_run_manifest(TicketSnapshot("linear", issue_id, key, updated_at=UPDATED), 1, namespace=namespace)
    name = create_or_attach(api, namespace, manifest).name
    if phase:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "foundryruns", name, {"status": {"phase": phase}})
    return name


def _approvals(api, namespace):
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "foundryapprovals")["items"]
    return sorted((i["spec"]["decision"], i["spec"]["approver"], i["spec"]["source"]) for i in items)


def _as(control_plane, user, *args):
    return CliRunner().invoke(cli, [*args, "--kubeconfig", str(control_plane.kubeconfig), "--context", user],
                              catch_exceptions=False)


def test_whoami_is_the_authenticated_user(control_plane):
    assert whoami(control_plane.api_client(control_plane.user_token("bob"))) == "bob"


def test_approve_twice_records_one_approval_in_the_callers_name(control_plane, kube_client, crds, namespace):
    _grant(kube_client, namespace, "alice")
    name = _run(kube_client, namespace, "appr-1", "ACME-11", phase="WaitingApproval")

    first = _as(control_plane, "alice", "approve", name, "-n", namespace, "-m", "plan looks right")
    assert first.exit_code == 0, first.output
    assert f"approved run {name} as alice" in first.output
    again = _as(control_plane, "alice", "approve", "ACME-11", "-n", namespace)  # by issue key this time
    assert again.exit_code == 0 and "already recorded" in again.output
    assert _approvals(kube_client, namespace) == [("approve", "alice", "kubernetes")]


def test_reject_and_stop_are_recorded_with_their_decision(control_plane, kube_client, crds, namespace):
    for user in ("alice", "bob"):
        _grant(kube_client, namespace, user)
    name = _run(kube_client, namespace, "appr-2", "ACME-12", phase="AgentRunning")
    assert _as(control_plane, "bob", "reject", name, "-n", namespace).exit_code == 0
    assert _as(control_plane, "alice", "stop", name, "-n", namespace).exit_code == 0
    assert _approvals(kube_client, namespace) == [("reject", "bob", "kubernetes"), ("stop", "alice", "kubernetes")]


def test_a_final_run_is_refused_and_nothing_is_recorded(control_plane, kube_client, crds, namespace):
    _grant(kube_client, namespace, "alice")
    name = _run(kube_client, namespace, "appr-3", "ACME-13", phase="Complete")
    result = _as(control_plane, "alice", "approve", name, "-n", namespace)
    assert result.exit_code == 1 and "is Complete, which is final" in result.output
    assert _approvals(kube_client, namespace) == []


def test_unknown_run_exits_1(control_plane, crds, namespace, kube_client):
    _grant(kube_client, namespace, "alice")
    result = _as(control_plane, "alice", "approve", "lin-missing-1", "-n", namespace)
    assert result.exit_code == 1 and "no FoundryRun 'lin-missing-1'" in result.output


def test_a_user_without_rights_gets_the_apis_refusal_not_a_traceback(control_plane, kube_client, crds, namespace):
    name = _run(kube_client, namespace, "appr-4", "ACME-14", phase="WaitingApproval")
    result = _as(control_plane, "carol", "approve", name, "-n", namespace)
    assert result.exit_code == 1
    assert "refused by the Kubernetes API" in result.output and "carol" in result.output
    assert _approvals(kube_client, namespace) == []


PLAN_A = "sha256:" + "0123456789abcdef" * 4
PLAN_B = "sha256:" + "fedcba9876543210" * 4


def _plan(api, namespace, name, plan_hash, revision, phase="WaitingApproval"):
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "foundryruns", name,
        {"status": {"phase": phase, "plan": {"goal": "Fix it", "hash": plan_hash, "revision": revision}}})


def _stamped(api, namespace):
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "foundryapprovals")["items"]
    return sorted((i["spec"]["decision"], i["spec"]["approver"], i["spec"].get("planHash")) for i in items)


def test_approve_is_stamped_with_the_current_plan_and_a_replan_needs_a_new_approval(
        control_plane, kube_client, crds, namespace, tmp_path):
    _grant(kube_client, namespace, "alice")
    name = _run(kube_client, namespace, "appr-5", "ACME-15")
    _plan(kube_client, namespace, name, PLAN_A, 1)

    first = _as(control_plane, "alice", "approve", name, "-n", namespace)
    assert first.exit_code == 0, first.output
    assert f"approved run {name} for plan {PLAN_A} (revision 1) as alice" in first.output
    assert "already recorded" in _as(control_plane, "alice", "approve", name, "-n", namespace).output

    # Re-planned: the same approver approving plan B is a new decision, not the old one attached to.
    _plan(kube_client, namespace, name, PLAN_B, 2)
    second = _as(control_plane, "alice", "approve", name, "-n", namespace)
    assert second.exit_code == 0 and f"for plan {PLAN_B} (revision 2)" in second.output, second.output
    assert _stamped(kube_client, namespace) == [("approve", "alice", PLAN_A), ("approve", "alice", PLAN_B)]

    # `foundry runs show` prints what the approvals bind to, and which plan each names.
    shown = _as(control_plane, "alice", "runs", "show", name, "-n", namespace,
                "--database-url", f"sqlite:///{tmp_path / 'none.db'}")
    assert f"Hash: {PLAN_B}" in shown.output and "Revision: 2 (re-planned)" in shown.output, shown.output
    assert "0123456789ab" in shown.output and "fedcba987654" in shown.output


def test_plan_hash_pins_the_plan_and_another_plan_is_refused(control_plane, kube_client, crds, namespace):
    _grant(kube_client, namespace, "alice")
    name = _run(kube_client, namespace, "appr-6", "ACME-16")
    _plan(kube_client, namespace, name, PLAN_B, 2)

    stale = _as(control_plane, "alice", "approve", name, "-n", namespace, "--plan-hash", PLAN_A)
    assert stale.exit_code == 1
    assert "not recorded: plan 0123456789ab is not the run's current plan fedcba987654" in stale.output
    assert _stamped(kube_client, namespace) == []

    pinned = _as(control_plane, "alice", "approve", name, "-n", namespace, "--plan-hash", "fedcba987654")
    assert pinned.exit_code == 0 and f"for plan {PLAN_B}" in pinned.output, pinned.output
    assert _stamped(kube_client, namespace) == [("approve", "alice", PLAN_B)]


def test_replan_is_recorded_for_the_current_plan_and_only_before_approval(control_plane, kube_client, crds, namespace):
    _grant(kube_client, namespace, "alice")
    name = _run(kube_client, namespace, "appr-7", "ACME-17")
    _plan(kube_client, namespace, name, PLAN_A, 1)
    result = _as(control_plane, "alice", "replan", name, "-n", namespace, "-m", "the ticket says SSO now")
    assert result.exit_code == 0 and f"asked to re-plan run {name} for plan {PLAN_A}" in result.output, result.output
    assert _stamped(kube_client, namespace) == [("replan", "alice", PLAN_A)]

    _plan(kube_client, namespace, name, PLAN_A, 1, phase="AgentRunning")
    late = _as(control_plane, "alice", "replan", name, "-n", namespace)
    assert late.exit_code == 1 and "only a run whose plan is not approved yet" in late.output


def test_a_run_without_a_plan_hash_gets_an_unstamped_approval(control_plane, kube_client, crds, namespace):
    _grant(kube_client, namespace, "alice")
    name = _run(kube_client, namespace, "appr-8", "ACME-18", phase="WaitingApproval")
    result = _as(control_plane, "alice", "approve", name, "-n", namespace)
    assert result.exit_code == 0 and "the run has no plan hash yet" in result.output
    assert _stamped(kube_client, namespace) == [("approve", "alice", None)]
