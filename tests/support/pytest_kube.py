"""Kubernetes fixtures: one real control plane per test session, a fresh namespace per test.

Set FOUNDRY_TEST_KUBECONFIG to run the same tests against an existing cluster
(kind, k3d) instead of the local etcd + kube-apiserver.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from foundry.dev.binaries import control_plane_bin_dir
from foundry.dev.controlplane import ControlPlane


@dataclass
class ExternalCluster:
    """An existing cluster named by FOUNDRY_TEST_KUBECONFIG; no process control."""

    kubeconfig: Path
    bin_dir: Path

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def server(self) -> str:
        return self.api_client().configuration.host

    def api_client(self, token: str | None = None):
        from kubernetes import config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        if token:
            api.configuration.api_key = {"authorization": f"Bearer {token}"}
        return api

    def user_token(self, name: str) -> str:
        pytest.skip("static user tokens exist only on the local control plane")

    def stop_apiserver(self) -> None:
        pytest.skip("cannot stop the API server of an external cluster")

    def start_apiserver(self) -> None:
        pytest.skip("cannot start the API server of an external cluster")

    def freeze_apiserver(self) -> None:
        pytest.skip("cannot freeze the API server of an external cluster")

    def thaw_apiserver(self) -> None:
        pytest.skip("cannot thaw the API server of an external cluster")


@pytest.fixture(scope="session")
def control_plane():
    external = os.environ.get("FOUNDRY_TEST_KUBECONFIG")
    bin_dir = control_plane_bin_dir(build=True)
    if external:
        yield ExternalCluster(Path(external), bin_dir)
        return
    workdir = Path(tempfile.mkdtemp(prefix="foundry-cp-"))
    cp = ControlPlane(bin_dir=bin_dir, workdir=workdir)
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_client(control_plane):
    api = control_plane.api_client()
    yield api
    api.close()


@pytest.fixture
def namespace(kube_client):
    """A fresh namespace for one test. (No namespace controller runs locally,
    so a deleted namespace stays Terminating; names never repeat.)"""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"foundry.dev/test": "true"})))
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException:
        pass
