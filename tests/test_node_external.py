"""The real-node fixture on a cluster that already runs (FOUNDRY_TEST_KUBECONFIG), as
`make kind-e2e` uses it: the selection (pure), the script's own checks, and a child pytest
pointed at this session's node, which must run real-node tests there and start no node."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node_external import (ENV_IMAGE_LOADER, ENV_KUBECONFIG, ENV_NODE_IP, ExternalNodeError,
                                           external_settings)

ROOT = Path(__file__).resolve().parents[1]


def test_without_the_variable_the_fixture_starts_its_own_node():
    assert external_settings({}) is None
    assert external_settings({ENV_KUBECONFIG: "  ", ENV_NODE_IP: "10.0.0.1"}) is None


def test_an_existing_cluster_needs_the_node_ip_and_a_loader_and_says_which_is_missing(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(ExternalNodeError) as err:
        external_settings({ENV_KUBECONFIG: str(kubeconfig)})
    assert f"{ENV_NODE_IP} and {ENV_IMAGE_LOADER}" in str(err.value)
    with pytest.raises(ExternalNodeError) as err:
        external_settings({ENV_KUBECONFIG: str(kubeconfig), ENV_NODE_IP: "172.18.0.1"})
    assert ENV_IMAGE_LOADER in str(err.value) and ENV_NODE_IP not in str(err.value).split(":")[0]
    with pytest.raises(ExternalNodeError, match="no such file"):
        external_settings({ENV_KUBECONFIG: str(tmp_path / "nope"), ENV_NODE_IP: "1.2.3.4", ENV_IMAGE_LOADER: "x"})
    got = external_settings({ENV_KUBECONFIG: str(kubeconfig), ENV_NODE_IP: " 172.18.0.1 ",
                             ENV_IMAGE_LOADER: "bash '/path with space/kind-e2e.sh' load-image"})
    assert got == (kubeconfig, "172.18.0.1", ["bash", "/path with space/kind-e2e.sh", "load-image"])


def test_the_kind_script_parses_and_its_image_loader_checks_its_arguments():
    script = ROOT / "tools" / "kind-e2e.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    done = subprocess.run(["bash", str(script), "load-image", "only-one-arg"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1 and "usage:" in done.stderr and "load-image TARBALL REF" in done.stderr
    done = subprocess.run(["bash", str(script), "load-image", "/nonexistent.tar", "x:1"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1 and "no image tarball /nonexistent.tar" in done.stderr


@pytest.mark.node
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the child may build the agent image first (2 GB under load)
def test_real_node_tests_run_on_an_already_running_cluster_given_by_the_variable(real_node, tmp_path):
    calls = tmp_path / "loader-calls"
    inner = getattr(real_node, "loader", None) or [sys.executable, "-m", "tests.support.node_external", "import",
                                                   str(real_node.containerd_address)]
    # A loader that notes each call, then loads with the real one (ctr into this node's containerd).
    loader = ["sh", "-c", f'echo "$@" >> {shlex.quote(str(calls))}; exec {shlex.join(inner)} "$@"', "loader"]
    env = {**os.environ, ENV_KUBECONFIG: str(real_node.kubeconfig), ENV_NODE_IP: real_node.node_ip,
           ENV_IMAGE_LOADER: shlex.join(loader), "PYTHONUNBUFFERED": "1"}
    tests = ["tests/test_node_cluster.py::test_a_job_completes_through_the_job_controller",
             "tests/test_node_cluster.py::test_pods_resolve_services_by_name_through_cluster_dns",
             "tests/test_agent_pod_node.py::"
             "test_a_command_attempt_completes_and_its_service_account_can_do_nothing_beyond_the_defaults"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", *tests], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1700)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "3 passed" in out, out[-3000:]
    assert "[node] node" not in out and "starting containerd" not in out, out[-3000:]  # no node of its own
    loaded = [line.split()[-1] for line in calls.read_text().splitlines()]
    assert loaded[0] == "foundry.local/busybox:1", loaded  # what a started node imports itself
    assert any("foundry-agent" in ref for ref in loaded), loaded  # the module's own import
