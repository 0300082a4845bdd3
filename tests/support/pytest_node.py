"""Fixtures for tests on a real single-node cluster (foundry/dev/node.py).

    real_node        session scope: a NodeCluster, Ready, with cluster DNS
    node_namespace   a fresh namespace on it (its default ServiceAccount exists)

Needs root; a machine without it fails these tests with what to do. With
FOUNDRY_TEST_KUBECONFIG set, real_node is that cluster instead (see
node_external.py for the two settings that go with it). The
envtest `control_plane` (pytest_kube.py) stays the fixture for suites that
need no pods.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from foundry.dev.node import NodeCluster, coredns_binary, node_bin_dir
from tests.support.node_pods import wait_default_service_account


@pytest.fixture(scope="session")
def real_node():
    external = _external_node()
    if external is not None:  # FOUNDRY_TEST_KUBECONFIG: a cluster someone else runs (kind-e2e)
        yield external.start()
        return
    state_root = Path(tempfile.mkdtemp(prefix="foundry-node-"))
    cluster = NodeCluster(bin_dir=node_bin_dir(build=True), state_root=state_root, coredns=coredns_binary(build=True))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(state_root, ignore_errors=True)


def _external_node():
    import os

    from foundry.dev.binaries import control_plane_bin_dir
    from tests.support.node_external import external_settings, external_node

    if external_settings(os.environ) is None:
        return None
    return external_node(os.environ, control_plane_bin_dir(build=True))


@pytest.fixture
def node_namespace(real_node):
    from kubernetes import client

    name = f"n-{uuid.uuid4().hex[:10]}"
    with real_node.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"foundry.dev/test": "true"})))
        wait_default_service_account(core, name)
        yield name
        try:
            core.delete_namespace(name)
        except client.ApiException:
            pass
