"""The container image, tested without a Docker engine (there is none here).

What can be proven: the Dockerfile's shape (non-root numeric user matching the
chart, `foundry` as entry point, OCI labels, a context that holds what the wheel
needs), and that every command the chart runs in the image exists, accepts the
chart's flags and works with a read-only root filesystem and only /tmp
writable, as the chart's securityContext demands.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foundry.paths import REPO_ROOT
from foundry.dev.binaries import control_plane_bin_dir
from tests.support.helmchart import pod_specs, render

DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "operator" / "Dockerfile.dockerignore"
FOUNDRY = Path(sys.executable).parent / "foundry"


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


@pytest.fixture(scope="module")
def chart_objects():
    return render(control_plane_bin_dir(build=True) / "helm")


FOUNDRY_IMAGE = "ghcr.io/foundry-dev/foundry:"


def foundry_pod_specs(objects: list[dict]) -> dict[str, dict]:
    """The pod specs whose containers run this image (the bundled PostgreSQL runs its own)."""
    return {where: spec for where, spec in pod_specs(objects).items()
            if any(c["image"].startswith(FOUNDRY_IMAGE) for c in spec["containers"])}


def foundry_containers(spec: dict) -> list[dict]:
    return [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["image"].startswith(FOUNDRY_IMAGE)]


def test_final_stage_runs_foundry_as_the_charts_non_root_user(chart_objects):
    final = _final_stage()
    users = [rest for word, rest in final if word == "USER"]
    assert users == ["10001:10001"], "a numeric user, so runAsNonRoot can be checked without /etc/passwd"
    specs = foundry_pod_specs(chart_objects)
    assert {w.split("/")[0] for w in specs} >= {"Deployment", "Pod"}, specs.keys()
    for where, spec in specs.items():
        assert spec["securityContext"]["runAsUser"] == 10001, where
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["foundry"]
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "HOME=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written outside /tmp
    # No compilers or package installs in the runtime stage: it copies the built virtualenv.
    runs = " ".join(rest for word, rest in final if word == "RUN")
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", runs), runs
    assert ("COPY", "--from=build /opt/foundry /opt/foundry") in final


def test_oci_labels():
    labels = " ".join(rest for word, rest in _final_stage() if word == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    license_ = tomllib_load()["project"]["license"]
    assert f'org.opencontainers.image.licenses="{license_}"' in labels


def tomllib_load() -> dict:
    import tomllib

    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path.split("/")[0], pat):
            ignored = not negate
    return ignored


def test_build_context_holds_what_the_wheel_needs():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    copies = [rest.split() for word, rest in _instructions(DOCKERFILE.read_text())
              if word == "COPY" and not rest.startswith("--from")]
    sources = [src for parts in copies for src in parts[:-1]]
    for src in sources:
        assert (REPO_ROOT / src).exists(), f"COPY {src}: no such path"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by {DOCKERIGNORE.name}"
    # The wheel force-includes crds/ and migrations/: both must be in the context and copied.
    force = tomllib_load()["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for src in force:
        assert src in sources, f"pyproject force-includes {src} but the Dockerfile does not copy it"
    assert _ignored(".venv", patterns) and _ignored(".git", patterns) and _ignored("tests", patterns)


# Stands in for the image's /opt/foundry: the checkout and its virtualenv.
_INSTALL = Path(os.path.commonpath([REPO_ROOT, Path(sys.prefix)]))

# A checkout under /tmp (CI may clone there) would vanish under the fresh tmpfs:
# it is parked read-only on /mnt first and moved back on top of the tmpfs.
_READ_ONLY_ROOT = """
set -e
keep=$1; shift
case "$keep" in /tmp/*) mount -n --bind "$keep" /mnt; mount -n -o remount,bind,ro /mnt;; esac
mount -n -o remount,bind,ro /
mount -n -t tmpfs -o size=64m tmpfs /tmp
case "$keep" in /tmp/*) mkdir -p "$keep"; mount -n --move /mnt "$keep";; esac
exec "$@"
"""


def _read_only_root(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run cmd with / remounted read-only and a fresh tmpfs on /tmp (a private mount namespace)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _READ_ONLY_ROOT, "sh",
                           str(_INSTALL), *cmd], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def read_only_ok():
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is missing: cannot emulate a read-only root filesystem")
    probe = _read_only_root(["sh", "-c", "touch /probe 2>/dev/null && echo writable || echo read-only; touch /tmp/x"],
                            {"PATH": "/usr/bin:/bin"})
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.strip()}")
    assert probe.stdout.strip() == "read-only"


def _container_env(container: dict) -> dict[str, str]:
    env = {"PATH": f"{FOUNDRY.parent}:/usr/bin:/bin"}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def test_every_command_the_chart_runs_exists_and_accepts_its_flags(chart_objects, read_only_ok):
    seen = set()
    for where, spec in foundry_pod_specs(chart_objects).items():
        for c in foundry_containers(spec):
            if "args" not in c:
                continue  # the helm test pod runs python3 -c, checked below
            # click parses every flag before --help acts, so an unknown flag fails here.
            proc = _read_only_root([str(FOUNDRY), *c["args"], "--help"], _container_env(c))
            assert proc.returncode == 0, f"{where}: foundry {' '.join(c['args'])}: {proc.stderr}"
            assert "Usage:" in proc.stdout
            seen.add(c["args"][0])
    assert seen == {"operator", "bridge", "db"}


def test_migration_runs_with_a_read_only_root(chart_objects, read_only_ok):
    # With the bundled database (the default) the schema is made by the `migrate` init container.
    operator = next(o for o in chart_objects if o["kind"] == "Deployment" and "operator" in o["metadata"]["name"])
    c = next(c for c in operator["spec"]["template"]["spec"]["initContainers"] if c["args"][:2] == ["db", "upgrade"])
    env = _container_env(c) | {"FOUNDRY_DATABASE_URL": "sqlite:////tmp/foundry.db"}
    proc = _read_only_root([str(FOUNDRY), *c["args"]], env)
    assert proc.returncode == 0, proc.stderr
    from foundry.db import migrate

    assert f"database at {migrate.head_revision()} (head)" in proc.stdout


def test_operator_refuses_to_start_without_credentials_clearly(read_only_ok):
    # What a user sees in the pod log when the chart's Secret lacks a key: one line, no traceback.
    env = {"PATH": f"{FOUNDRY.parent}:/usr/bin:/bin", "HOME": "/tmp", "FOUNDRY_DATABASE_URL": "sqlite:////tmp/x.db",
           "KUBECONFIG": "/tmp/none"}
    proc = _read_only_root([str(FOUNDRY), "operator", "--namespace", "foundry"], env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "cannot start the operator" in proc.stderr, proc.stderr


def test_helm_test_pod_script_is_valid_python(chart_objects):
    pod = next(o for o in chart_objects if o["kind"] == "Pod")
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python3", "-c"]
    compile(command[2], "helm-test", "exec")
    assert "/readyz" in command[2]
