"""The local control plane is real: RBAC is enforced, ServiceAccount tokens work, and
it survives an API server restart (used by the bridge's fault tests)."""

from __future__ import annotations

import subprocess
import time

import pytest
from kubernetes import client

from tests.support.kubeutil import client_with_token, ensure_service_account, service_account_token

pytestmark = pytest.mark.kube


def test_admin_can_list_namespaces(kube_client, namespace):
    names = {ns.metadata.name for ns in client.CoreV1Api(kube_client).list_namespace().items}
    assert namespace in names


def test_rbac_refuses_a_user_without_a_binding(control_plane):
    alice = control_plane.api_client(control_plane.user_token("alice"))
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(alice).list_namespace()
    assert err.value.status == 403


def test_service_account_token_is_issued_and_authorised_by_rbac(kube_client, namespace):
    ensure_service_account(kube_client, namespace, "reader")
    sa = client_with_token(kube_client, service_account_token(kube_client, namespace, "reader"))
    core = client.CoreV1Api(sa)
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_config_map(namespace)
    assert err.value.status == 403
    rbac = client.RbacAuthorizationV1Api(kube_client)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "cm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    })
    # The authorizer reads RBAC from an informer cache: a new binding takes effect
    # within moments, not instantly.
    deadline = time.monotonic() + 15
    while True:
        try:
            assert core.list_namespaced_config_map(namespace).items is not None
            break
        except client.ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_real_kubectl_talks_to_it(control_plane, namespace):
    out = subprocess.run(
        [str(control_plane.kubectl), "--kubeconfig", str(control_plane.kubeconfig), "get", "namespace", namespace, "-o", "name"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == f"namespace/{namespace}"


def test_api_server_restart_keeps_state(control_plane, kube_client, namespace):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="kept"), data={"a": "1"}))
    control_plane.stop_apiserver()
    with pytest.raises(Exception):
        client.CoreV1Api(control_plane.api_client()).read_namespaced_config_map("kept", namespace, _request_timeout=2)
    control_plane.start_apiserver()
    assert core.read_namespaced_config_map("kept", namespace).data == {"a": "1"}
