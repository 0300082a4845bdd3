"""`foundry dev up` keeps the local stack running in the background; `foundry dev down` stops all of it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from foundry.demo.processes import pid_alive

pytestmark = [pytest.mark.kube, pytest.mark.slow]
FOUNDRY = [sys.executable, "-m", "foundry.cli.main", "dev"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_up_twice_then_down(control_plane, crds, namespace, tmp_path):
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(tmp_path)}
    up = subprocess.run(FOUNDRY + ["up", "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace],
                        env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={control_plane.kubeconfig}" in up.stdout
    assert f"export FOUNDRY_NAMESPACE={namespace}" in up.stdout
    assert re.search(r"Linear webhook secret\s+[0-9a-f]{32}", up.stderr)

    info = json.loads((tmp_path / "dev-stack" / "stack.json").read_text())
    supervisor = info["pid"]
    children = _children(supervisor)
    assert len(children) >= 2  # bridge and operator
    with urllib.request.urlopen(f"{info['bridge']}/healthz", timeout=5) as answer:
        assert answer.status == 200

    again = subprocess.run(FOUNDRY + ["up"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and f"pid {supervisor}" in again.stderr  # the same stack, not a second one

    down = subprocess.run(FOUNDRY + ["down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not pid_alive(supervisor)
    assert not any(pid_alive(p) for p in children)
    assert not (tmp_path / "dev-stack" / "stack.json").exists()

    nothing = subprocess.run(FOUNDRY + ["down"], env=env, capture_output=True, text=True, timeout=60)
    assert nothing.returncode == 1 and "no Foundry dev stack is running" in nothing.stderr
