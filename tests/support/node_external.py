"""The real-node fixture's other source: a cluster that is already running (kind, k3d, a
`foundry dev cluster --node` started by hand), named by FOUNDRY_TEST_KUBECONFIG.

The node tests need three things of a cluster besides its API: the host's address as pods
see it (they bind stand-ins there), a way to put locally built images on the node (nothing is
pulled), and the node itself. The first two come from the environment:

    FOUNDRY_TEST_KUBECONFIG     the cluster (the envtest fixtures honour it too)
    FOUNDRY_TEST_NODE_IP        the host as pods reach it (kind: the `kind` network's gateway)
    FOUNDRY_TEST_IMAGE_LOADER   a command run as `LOADER TARBALL REF` that makes the docker-archive
                                TARBALL available on every node under REF (tools/kind-e2e.sh has
                                one for kind; `python -m tests.support.node_external import
                                SOCKET` for a containerd socket on this host)

ExternalNode offers the surface of NodeCluster the node tests use; what only a cluster this
process started can do (its slot, its processes, its static users) is not offered.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_KUBECONFIG = "FOUNDRY_TEST_KUBECONFIG"
ENV_NODE_IP = "FOUNDRY_TEST_NODE_IP"
ENV_IMAGE_LOADER = "FOUNDRY_TEST_IMAGE_LOADER"


class ExternalNodeError(RuntimeError):
    pass


def external_settings(env: Mapping[str, str]) -> tuple[Path, str, list[str]] | None:
    """(kubeconfig, node IP, loader command) when `env` names an existing cluster, else None
    (the fixture starts its own node). Half a setting is an error that says what is missing."""
    kubeconfig = env.get(ENV_KUBECONFIG, "").strip()
    if not kubeconfig:
        return None
    missing = [name for name in (ENV_NODE_IP, ENV_IMAGE_LOADER) if not env.get(name, "").strip()]
    if missing:
        raise ExternalNodeError(
            f"{ENV_KUBECONFIG} names an existing cluster, so the real-node tests also need "
            f"{' and '.join(missing)}: {ENV_NODE_IP} is the host's address as pods reach it, "
            f"{ENV_IMAGE_LOADER} a command run as `LOADER TARBALL REF` that loads an image onto the node "
            "(tools/kind-e2e.sh sets both for kind)")
    path = Path(kubeconfig)
    if not path.is_file():
        raise ExternalNodeError(f"{ENV_KUBECONFIG}={kubeconfig}: no such file")
    loader = shlex.split(env[ENV_IMAGE_LOADER])
    return path, env[ENV_NODE_IP].strip(), loader


@dataclass
class ExternalNode:
    kubeconfig: Path
    bin_dir: Path
    node_ip: str  # the host as pods see it: stand-ins bind here
    loader: list[str]
    loaded: list[str] = field(default_factory=list)

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def server(self) -> str:
        with self.api_client() as api:
            return api.configuration.host

    def api_client(self, token: str | None = None):
        from kubernetes import config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        if token:
            api.configuration.api_key = {"authorization": f"Bearer {token}"}
        return api

    def _node(self):
        from kubernetes import client

        with self.api_client() as api:
            nodes = client.CoreV1Api(api).list_node().items
        if not nodes:
            raise ExternalNodeError(f"the cluster of {self.kubeconfig} has no nodes")
        return nodes[0]

    @property
    def node_name(self) -> str:
        return self._node().metadata.name

    @property
    def internal_ip(self) -> str:
        return next(a.address for a in self._node().status.addresses if a.type == "InternalIP")

    def user_token(self, name: str) -> str:
        import pytest

        pytest.skip("static user tokens exist only on a node this test session started")

    def import_image(self, tar_path: Path | str, ref: str) -> str:
        """Run the loader for (tarball, ref); returns `ref` normalised as the kubelet asks for it."""
        from foundry.dev.node_images import normalize_ref

        cmd = [*self.loader, str(tar_path), ref]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise ExternalNodeError(f"loading {ref} with `{shlex.join(cmd)}` failed ({done.returncode}):\n"
                                    f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        self.loaded.append(ref)
        return normalize_ref(ref)

    def start(self) -> "ExternalNode":
        """Load the images every node test may use (a NodeCluster imports them at its start)."""
        from foundry.dev.node_images import BUSYBOX_IMAGE, busybox_image

        self.import_image(busybox_image(), BUSYBOX_IMAGE)
        return self

    def stop(self) -> None:
        """Nothing to stop: the cluster belongs to whoever started it."""


def external_node(env: Mapping[str, str], bin_dir: Path) -> ExternalNode | None:
    settings = external_settings(env)
    if settings is None:
        return None
    kubeconfig, node_ip, loader = settings
    return ExternalNode(kubeconfig, bin_dir, node_ip, loader)


def _main(argv: list[str]) -> int:
    """`python -m tests.support.node_external import SOCKET TARBALL REF`: an image loader for a
    containerd on this host (a node started by `foundry dev cluster --node`, say)."""
    if len(argv) != 4 or argv[0] != "import":
        print("usage: python -m tests.support.node_external import CONTAINERD_SOCKET TARBALL REF", file=sys.stderr)
        return 2
    from foundry.dev.node_images import import_image

    print(import_image(argv[2], argv[3], address=argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


__all__ = ["ExternalNode", "ExternalNodeError", "external_node", "external_settings", "ENV_KUBECONFIG",
           "ENV_NODE_IP", "ENV_IMAGE_LOADER"]
