"""Find (or build, via tools/controlplane.sh) kube-apiserver, etcd, kubectl and helm."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from foundry.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "tools" / "controlplane.sh"
BINARIES = ("kube-apiserver", "etcd", "kubectl", "helm")


class BinariesUnavailable(RuntimeError):
    pass


def control_plane_bin_dir(build: bool = True) -> Path:
    """Directory holding all control-plane binaries at the pinned versions.

    Delegates to tools/controlplane.sh, which reuses $KUBEBUILDER_ASSETS, PATH or
    the cache before building anything; with build=False it only looks.
    """
    if SCRIPT.exists():
        args = ["bash", str(SCRIPT)] + ([] if build else ["--check"])
        proc = subprocess.run(args, stdout=subprocess.PIPE, text=True)  # progress goes to our stderr
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            return Path(lines[-1])
        raise BinariesUnavailable(
            f"{SCRIPT} could not provide {', '.join(BINARIES)} (exit {proc.returncode}); see the messages above"
        )
    # An installed Foundry without the source tree: trust KUBEBUILDER_ASSETS or PATH.
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and all((Path(assets) / b).exists() for b in BINARIES[:3]):
        return Path(assets)
    found = shutil.which("kube-apiserver")
    if found:
        return Path(found).parent
    raise BinariesUnavailable(
        "kube-apiserver and etcd were not found: set KUBEBUILDER_ASSETS to a directory holding them"
    )
