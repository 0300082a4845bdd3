"""The product wheel: what it holds, and what a plain `pip install` of it can do.

The wheel is the one the images install (foundry.dev.images.build_wheel: the
pinned hatchling, reproducible bytes). A fresh virtualenv gets it with no
extras, from a directory outside the checkout so nothing of the source tree is
importable: the product commands work, `foundry dev` says in one line which
extra it needs; then the `dev` extra is added and `foundry dev cluster
--detach` / `stop` work from the installed package alone. Downloads are cached
in ~/.cache/foundry/wheelhouse, so a warm run installs without fetching anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from foundry.dev.binaries import control_plane_bin_dir
from foundry.dev.images import build_wheel
from foundry.paths import cache_dir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(1800)  # a cold run downloads the requirements once
# What only tests may import: the test package, pytest plugins, harnesses, crash injection.
TEST_CODE = re.compile(r"(^|/)(tests?|testing)/|testkit|_kit\.py$|pytest|conftest|crash_points|"
                       r"^foundry/operator/faults\.py$")


@pytest.fixture(scope="module")
def wheel() -> Path:
    return build_wheel()


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_wheel_holds_no_test_code(wheel):
    names = _names(wheel)
    assert [n for n in names if TEST_CODE.search(n)] == []
    # ...and does hold the product and the local stack the `dev` extra runs.
    for needed in ("foundry/cli/main.py", "foundry/operator/checkpoints.py", "foundry/dev/linear_server.py",
                   "foundry/_data/migrations/env.py"):
        assert needed in names, needed
    assert any(n.startswith("foundry/_data/crds/") and n.endswith(".yaml") for n in names)


def test_graphql_is_only_a_requirement_of_the_dev_extra(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    graphql = [r for r in requires if r.lower().startswith("graphql-core")]
    # hatchling writes the test extra's `foundry[dev]` out as the dev extra's requirements
    assert sorted(r.partition(";")[2].strip() for r in graphql) == ["extra == 'dev'", "extra == 'test'"], graphql


def _wheelhouse(wheel: Path) -> Path:
    """The wheels of the product's and the dev extra's requirements, downloaded once per
    requirement set (the index here sends no cache headers pip would keep)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = sorted(line for line in meta.splitlines() if line.startswith("Requires-Dist:"))
    key = hashlib.sha256(json.dumps([sys.version_info[:2], requires]).encode()).hexdigest()[:16]
    house = cache_dir() / "wheelhouse" / key
    if not (house / ".complete").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(house), f"{wheel}[dev]"],
                              capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stderr[-4000:]
        for own in house.glob("foundry-*.whl"):
            own.unlink()
        (house / ".complete").touch()
    return house


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, wheel):
    """A virtualenv with the wheel and no extras, and a runner for its `foundry` outside the checkout."""
    house = _wheelhouse(wheel)
    home = tmp_path_factory.mktemp("fresh")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KUBECONFIG")}
    env.update(FOUNDRY_STATE_DIR=str(home / "state"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    python = str(venv / "bin" / "python")

    def pip_install(spec: str) -> None:
        # The checkout's pip installs into the fresh interpreter (--python): no pip inside the venv.
        done = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile",
                               "--no-index", "--find-links", str(house), spec],
                              cwd=home, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-4000:]

    def foundry(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "foundry"), *args], cwd=home, env={**env, **(extra_env or {})},
                              capture_output=True, text=True, timeout=300)

    pip_install(str(wheel))
    return home, venv, pip_install, foundry


@pytest.mark.slow
def test_a_plain_install_runs_the_product_commands(fresh):
    home, venv, _, foundry = fresh
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import foundry, sys; print(foundry.__file__)"],
                           cwd=home, capture_output=True, text=True, timeout=60)
    assert str(venv) in where.stdout, where  # the installed package, not the checkout
    for args in (["--help"], ["operator", "--help"], ["bridge", "--help"]):
        done = foundry(*args)
        assert done.returncode == 0 and "Usage:" in done.stdout, (args, done.stderr)
    url = f"sqlite:///{home / 'foundry.db'}"
    done = foundry("db", "upgrade", "--database-url", url)
    assert done.returncode == 0 and "(head)" in done.stdout, done.stderr
    assert foundry("db", "current", "--database-url", url).stdout.strip().endswith("(head)")
    broken = subprocess.run([str(venv / "bin" / "python"), "-c", "import graphql"], capture_output=True, timeout=60)
    assert broken.returncode != 0, "graphql-core came with a plain install"


@pytest.mark.slow
def test_a_plain_install_says_in_one_line_that_foundry_dev_needs_the_extra(fresh):
    _, _, _, foundry = fresh
    for args in (["dev", "cluster"], ["dev", "demo"]):
        done = foundry(*args)
        assert done.returncode != 0, (args, done.stdout)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'foundry[dev]'" in lines[0], done.stderr


_IMPORT_ALL = """
import importlib, json, pkgutil, foundry
failed = {}
for m in pkgutil.walk_packages(foundry.__path__, "foundry."):
    if m.name.split(".")[1] in ("dev", "demo"):  # the local stack: the dev extra's
        continue
    try:
        importlib.import_module(m.name)
    except Exception as exc:
        failed[m.name] = repr(exc)
print(json.dumps(failed))
"""


@pytest.mark.slow
def test_every_product_module_imports_without_the_dev_extra(fresh):
    home, venv, _, _ = fresh
    done = subprocess.run([str(venv / "bin" / "python"), "-c", _IMPORT_ALL], cwd=home, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


@pytest.mark.slow
@pytest.mark.kube
def test_with_the_dev_extra_a_detached_dev_cluster_starts_and_stops(fresh, wheel, tmp_path):
    home, _, pip_install, foundry = fresh
    pip_install(f"{wheel}[dev]")
    # Outside the checkout there is no tools/controlplane.sh: the binaries come from KUBEBUILDER_ASSETS.
    assets = {"KUBEBUILDER_ASSETS": str(control_plane_bin_dir(build=False)),
              "FOUNDRY_STATE_DIR": str(tmp_path / "state")}
    up = foundry("dev", "cluster", "--detach", extra_env=assets)
    assert up.returncode == 0, up.stderr
    kubeconfig = re.search(r"^export KUBECONFIG=(\S+)$", up.stdout, re.M).group(1)
    try:
        kubectl = Path(assets["KUBEBUILDER_ASSETS"]) / "kubectl"
        ns = subprocess.run([str(kubectl), "--kubeconfig", kubeconfig, "get", "ns", "default", "-o", "json"],
                            capture_output=True, text=True, timeout=60)
        assert ns.returncode == 0 and json.loads(ns.stdout)["metadata"]["name"] == "default", ns.stderr
    finally:
        down = foundry("dev", "cluster", "stop", extra_env=assets)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    again = foundry("dev", "cluster", "stop", extra_env=assets)
    assert again.returncode == 1 and "no dev cluster" in again.stderr
