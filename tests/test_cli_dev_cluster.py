"""`foundry dev cluster` starts a usable control plane for a person and stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kube, pytest.mark.slow]
FOUNDRY = [sys.executable, "-m", "foundry.cli.main"]


def _kubectl_ok(kubeconfig: str) -> bool:
    from foundry.dev.binaries import control_plane_bin_dir

    kubectl = control_plane_bin_dir(build=False) / "kubectl"
    out = subprocess.run([str(kubectl), "--kubeconfig", kubeconfig, "get", "ns", "default", "-o", "name"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "namespace/default"


def _pids(state_dir: Path) -> list[int]:
    import json

    state = state_dir / "dev-cluster" / "state.json"
    return list(json.loads(state.read_text())["pids"].values()) if state.exists() else []


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); check its state
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


def test_detach_then_stop(tmp_path, control_plane):
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(tmp_path)}
    out = subprocess.run(FOUNDRY + ["dev", "cluster", "--detach"], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    kubeconfig = re.search(r"^export KUBECONFIG=(\S+)$", out.stdout, re.M).group(1)
    assert _kubectl_ok(kubeconfig)
    pids = _pids(tmp_path)
    assert len(pids) == 2
    stop = subprocess.run(FOUNDRY + ["dev", "cluster", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert all(_gone(p) for p in pids)
    again = subprocess.run(FOUNDRY + ["dev", "cluster", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "no dev cluster" in again.stderr


def test_foreground_stops_on_ctrl_c(tmp_path, control_plane):
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen(FOUNDRY + ["dev", "cluster"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("export KUBECONFIG="), proc.stderr.read() if proc.poll() is not None else line
        assert _kubectl_ok(line.split("=", 1)[1].strip())
        pids = _pids(tmp_path)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids and all(_gone(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
