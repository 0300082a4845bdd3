"""The locally built images (foundry.dev.images) are the images the Dockerfiles describe.

Built here without Docker: a debootstrap root filesystem, Debian packages in a
chroot, umoci and skopeo. These tests read the exported docker-archive tarballs
(what containerd imports) and run the images with runc as their own config says
(user, environment, working directory), with a read-only root like the chart's
pods. Needs root, umoci, skopeo and runc; a cold build takes several minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from foundry import __version__
from foundry.paths import REPO_ROOT
from foundry.dev import oci
from foundry.dev.binaries import control_plane_bin_dir
from foundry.dev.dockerfile import copies_from_context, global_args, image_config, instructions, stage_args
from tests.support.helmchart import pod_specs, render
from foundry.dev.images import (BASE_ENV, POSTGRES_REF, agent_cli_versions, cache_key, chart_refs,
                                    ensure_built, images_cache, runtime_requirements, stable_config)

pytestmark = [pytest.mark.timeout(3600), pytest.mark.slow]  # a cold build of all three images takes minutes

DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
AGENT_DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile.agent"


@pytest.fixture(scope="module")
def built():
    if os.geteuid() != 0:
        pytest.fail("building and running the images needs root (debootstrap, chroot, runc): run the tests as root")
    for tool in ("umoci", "skopeo", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install umoci skopeo runc debootstrap")
    return {b.name: b for b in ensure_built()}


@pytest.fixture(scope="module")
def bundles(built, tmp_path_factory):
    """name -> (bundle dir, runtime config), unpacked from the tarball containerd gets (the layers
    below the top one once per content, kept in the images cache; see oci.cached_bundle)."""
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    try:
        for name, b in built.items():
            out[name] = (root / name, oci.cached_bundle(b.tar, root / name, images_cache() / "unpacked"))
        yield out
    finally:
        for bundle, _ in out.values():
            oci.release_bundle(bundle)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def runc_state(tmp_path_factory):
    return tmp_path_factory.mktemp("runc-state")


def _run(bundles, runc_state, name: str, script: str, **kwargs) -> subprocess.CompletedProcess:
    bundle, config = bundles[name]
    proc = oci.run_in_bundle(bundle, config, ["/bin/sh", "-c", script], state_dir=runc_state,
                             name=f"{name}-{time.monotonic_ns()}", **kwargs)
    assert proc.returncode == 0, f"{script}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _expected(dockerfile: Path, image_cfg: dict) -> dict:
    """The Dockerfile's config, with the build's own revision and created labels."""
    labels = image_cfg["config"]["Labels"]
    cfg = image_config(dockerfile.read_text(), {
        "VERSION": __version__,
        "REVISION": labels["org.opencontainers.image.revision"],
        "CREATED": labels["org.opencontainers.image.created"],
    }, BASE_ENV)
    return {"Entrypoint": cfg.entrypoint, "Cmd": cfg.cmd or None, "User": cfg.user, "WorkingDir": cfg.workdir,
            "Env": cfg.env, "Labels": cfg.labels, "ExposedPorts": sorted(cfg.exposed_ports)}


def _actual(image_cfg: dict) -> dict:
    c = image_cfg["config"]
    return {"Entrypoint": c.get("Entrypoint"), "Cmd": c.get("Cmd"), "User": c.get("User", ""),
            "WorkingDir": c.get("WorkingDir", ""), "Env": dict(e.split("=", 1) for e in c.get("Env", [])),
            "Labels": c.get("Labels", {}), "ExposedPorts": sorted(c.get("ExposedPorts", {}))}


# ---- the configs the Dockerfiles describe -----------------------------------------------

def test_foundry_image_config_is_the_dockerfiles(built):
    cfg = oci.archive_config(built["foundry"].tar)
    assert cfg["os"] == "linux" and cfg["architecture"] == "amd64"
    assert _actual(cfg) == _expected(DOCKERFILE, cfg)
    # The same facts spelled out, so a misreading of the Dockerfile cannot hide here.
    c = cfg["config"]
    assert c["Entrypoint"] == ["foundry"] and c["Cmd"] == ["--help"]
    assert c["User"] == "10001:10001" and c["WorkingDir"] == "/tmp"
    assert "HOME=/tmp" in c["Env"] and c["Env"][0].startswith("PATH=/opt/foundry/bin:")
    assert set(c["ExposedPorts"]) == {"8080/tcp", "8081/tcp", "9090/tcp"}
    assert c["Labels"]["org.opencontainers.image.version"] == __version__


def test_agent_image_config_is_the_dockerfiles(built):
    cfg = oci.archive_config(built["foundry-agent"].tar)
    assert _actual(cfg) == _expected(AGENT_DOCKERFILE, cfg)
    c = cfg["config"]
    assert c["Entrypoint"] == ["foundry", "agent", "run"] and not c.get("Cmd")
    assert c["User"] == "10001:10001" and c["WorkingDir"] == "/foundry/work"
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["HOME"] == "/foundry/work/home"
    pins = agent_cli_versions()
    for cli in ("claude-code", "codex", "aider"):
        assert c["Labels"][f"dev.foundry.agent.{cli}.version"] == pins[cli]


def test_no_secret_is_baked_into_the_agent_image(built):
    names = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|CREDENTIAL", re.I)
    for word, rest in instructions(AGENT_DOCKERFILE.read_text()):
        if word in ("ENV", "ARG"):
            assert not names.search(rest.split("=", 1)[0]), f"{word} {rest}"
    env = oci.archive_config(built["foundry-agent"].tar)["config"]["Env"]
    assert not [e for e in env if names.search(e.split("=", 1)[0])], env
    files = oci.archive_files(built["foundry-agent"].tar)
    assert not [f for f in files if f.startswith("foundry/credentials/")], "the token arrives by Secret at run time"


def test_the_agent_dockerfile_pins_the_clis_agent_clis_sh_installs():
    pins = agent_cli_versions()
    args = stage_args(AGENT_DOCKERFILE.read_text())
    assert {"claude-code": args["CLAUDE_CODE_VERSION"], "codex": args["CODEX_VERSION"],
            "aider": args["AIDER_VERSION"]} == pins
    # Every stage that names a pin declares the same default.
    for key, value in (("CLAUDE_CODE_VERSION", pins["claude-code"]), ("CODEX_VERSION", pins["codex"]),
                       ("AIDER_VERSION", pins["aider"])):
        declared = re.findall(rf"^ARG {key}=(\S+)$", AGENT_DOCKERFILE.read_text(), re.M)
        assert declared and set(declared) == {value}, (key, declared)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    import fnmatch

    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = (pat[1:] if negate else pat).rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path.split("/")[0], pat):
            ignored = not negate
    return ignored


def test_agent_dockerfile_build_context_holds_what_it_copies():
    ignore = AGENT_DOCKERFILE.with_name(AGENT_DOCKERFILE.name + ".dockerignore")
    patterns = [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
    sources = copies_from_context(AGENT_DOCKERFILE.read_text())
    assert set(sources) == set(copies_from_context(DOCKERFILE.read_text())), "the same wheel inputs as the operator's"
    for src in sources:
        assert (REPO_ROOT / src).exists(), src
        assert not _ignored(src, patterns), src
    assert _ignored(".venv", patterns) and _ignored("tests", patterns) and _ignored(".git", patterns)


def test_the_chart_runs_the_images_built_here(built):
    foundry_ref, agent_ref = chart_refs()
    assert built["foundry"].ref == foundry_ref == f"ghcr.io/foundry-dev/foundry:{__version__}"
    assert built["foundry-agent"].ref == agent_ref == f"ghcr.io/foundry-dev/foundry-agent:{__version__}"
    assert built["postgres"].ref == POSTGRES_REF
    for b in built.values():
        tags = oci.archive_manifest(b.tar)["RepoTags"]
        # skopeo writes docker.io names in their short form, which containerd expands again.
        assert tags in ([b.ref], [b.ref.removeprefix("docker.io/library/")]), tags
    images = {c["image"] for spec in pod_specs(render(control_plane_bin_dir(build=True) / "helm")).values()
              for c in spec["containers"] + spec.get("initContainers", [])}
    assert foundry_ref in images, images


# ---- what is inside ----------------------------------------------------------------------

def test_foundry_image_runs_foundry_at_this_version_as_its_user(built, bundles, runc_state):
    python = global_args(DOCKERFILE.read_text())["PYTHON_VERSION"]
    out = _run(bundles, runc_state, "foundry",
               "id -u; id -g; pwd; foundry version; python --version; "
               "FOUNDRY_DATABASE_URL=sqlite:////tmp/foundry.db foundry db upgrade",
               capabilities=()).stdout.splitlines()
    assert out[:4] == ["10001", "10001", "/tmp", __version__]
    assert out[4].startswith(f"Python {python}.")
    assert "(head)" in out[-1], out  # the wheel carries the migrations, and / is read-only


def test_product_image_holds_no_test_runner(built):
    for name in ("foundry", "foundry-agent"):
        files = oci.archive_files(built[name].tar)
        site = [f for f in files if "/site-packages/" in f and f.startswith("opt/foundry/")]
        assert site, f"{name}: no site-packages under /opt/foundry?"
        assert not [f for f in site if re.search(r"/site-packages/(_?pytest|hypothesis)\b", f)], name


def test_product_image_holds_no_test_code(built):
    files = oci.archive_files(built["foundry"].tar)
    site = [f.split("/site-packages/", 1)[1] for f in files if "/site-packages/" in f and f.startswith("opt/foundry/")]
    assert "foundry/operator/checkpoints.py" in site  # the product is there...
    test_code = re.compile(r"^tests/support/|^foundry/(testing/|.*testkit|.*pytest|operator/faults\.py$)|crash_points")
    assert [f for f in site if test_code.search(f)] == []  # ...and no test package, harness or crash injection


def test_agent_image_has_the_pinned_clis_and_git_as_non_root(built, bundles, runc_state):
    pins = agent_cli_versions()
    # /foundry/work is an emptyDir in the pod: empty, so the runner makes HOME itself.
    out = _run(bundles, runc_state, "foundry-agent",
               "id -u; mkdir -p \"$HOME\" && cd \"$HOME\"; claude --version; codex --version; "
               "aider --version; git --version; foundry version; test -s /opt/aider/model_prices_and_context_window.json",
               empty_dirs=("/tmp", "/foundry/work"), capabilities=(),
               env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"}).stdout.splitlines()
    assert out[0] == "10001"
    assert out[1].startswith(pins["claude-code"]), out
    assert out[2] == f"codex-cli {pins['codex']}", out
    assert out[3] == f"aider {pins['aider']}", out
    assert out[4].startswith("git version 2."), out
    assert out[5] == __version__


def test_agent_image_entrypoint_is_the_runner(built, bundles, runc_state):
    bundle, config = bundles["foundry-agent"]
    assert config["process"]["args"] == ["foundry", "agent", "run"]
    assert config["process"]["user"]["uid"] == 10001 and config["process"]["cwd"] == "/foundry/work"
    out = _run(bundles, runc_state, "foundry-agent", "foundry agent run --help", capabilities=()).stdout
    assert "Usage:" in out


# ---- PostgreSQL ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_postgres(bundles, runc_state, name, port, **kwargs):
    bundle, config = bundles["postgres"]
    proc = oci.run_in_bundle(bundle, config, config["process"]["args"] + ["-c", f"port={port}",
                                                                          "-c", "listen_addresses=127.0.0.1"],
                             host_network=True, state_dir=runc_state, name=name, background=True, **kwargs)
    return proc


def _connect(port: int, password: str, deadline: float = 60) -> psycopg.Connection:
    end = time.monotonic() + deadline
    while True:
        try:
            return psycopg.connect(host="127.0.0.1", port=port, user="foundry", password=password,
                                   dbname="foundry", connect_timeout=2, autocommit=True)
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc) or time.monotonic() > end:
                raise
            time.sleep(0.3)


def _stop(runc_state, name, proc) -> str:
    subprocess.run(["runc", "--root", str(runc_state), "kill", name, "INT"], check=True)  # the image's STOPSIGNAL
    _, err = proc.communicate(timeout=60)
    subprocess.run(["runc", "--root", str(runc_state), "delete", "--force", name], capture_output=True)
    assert proc.returncode == 0, err
    return err


def test_postgres_image_initialises_once_and_keeps_its_data(built, bundles, runc_state, tmp_path):
    cfg = oci.archive_config(built["postgres"].tar)["config"]
    assert cfg["Entrypoint"] == ["docker-entrypoint.sh"] and cfg["Cmd"] == ["postgres"]
    assert cfg.get("StopSignal") == "SIGINT" and "5432/tcp" in cfg["ExposedPorts"]
    env = {"POSTGRES_PASSWORD": "s3cret", "POSTGRES_USER": "foundry", "POSTGRES_DB": "foundry"}
    volume = tmp_path / "volume"
    volume.mkdir()  # a fresh volume, owned by root, as a PVC arrives
    port = _free_port()
    # Started as root with containerd's default capabilities (a pod with no securityContext).
    proc = _start_postgres(bundles, runc_state, "pg-first", port, env=env, read_only=False, empty_dirs=(),
                           binds=((str(volume), "/var/lib/postgresql/data"),))
    try:
        with _connect(port, "s3cret") as conn:
            assert conn.execute("select current_user, current_database()").fetchone() == ("foundry", "foundry")
            conn.execute("create table kept (v text)")
            conn.execute("insert into kept values ('across restarts')")
            pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _connect(port, "wrong")
    finally:
        err = _stop(runc_state, "pg-first", proc)
    assert "initialising" in err
    assert pid and volume.stat().st_uid == 999 and (volume / "PG_VERSION").stat().st_uid == 999
    # Restarted on the same volume: no second initdb, the data is there.
    proc = _start_postgres(bundles, runc_state, "pg-again", port, env=env, read_only=False, empty_dirs=(),
                           binds=((str(volume), "/var/lib/postgresql/data"),))
    try:
        with _connect(port, "s3cret") as conn:
            assert conn.execute("select v from kept").fetchall() == [("across restarts",)]
    finally:
        err = _stop(runc_state, "pg-again", proc)
    assert "initialising" not in err


def test_postgres_image_runs_restricted_as_999(built, bundles, runc_state, tmp_path):
    """A restricted pod: runAsUser 999, no capabilities, read-only root, emptyDirs for the socket and /tmp."""
    volume = tmp_path / "volume"
    volume.mkdir()
    os.chown(volume, 999, 999)  # what fsGroup does to the PVC
    port = _free_port()
    proc = _start_postgres(bundles, runc_state, "pg-restricted", port, user=(999, 999), capabilities=(),
                           env={"POSTGRES_PASSWORD": "p", "POSTGRES_USER": "foundry"},
                           empty_dirs=("/tmp", "/var/run/postgresql"), binds=((str(volume), "/var/lib/postgresql/data"),))
    try:
        with _connect(port, "p") as conn:  # POSTGRES_DB defaults to the user
            assert conn.execute("select current_database()").fetchone() == ("foundry",)
    finally:
        _stop(runc_state, "pg-restricted", proc)


def test_postgres_image_refuses_to_initialise_without_a_password(built, bundles, runc_state, tmp_path):
    bundle, config = bundles["postgres"]
    proc = oci.run_in_bundle(bundle, config, None, read_only=False, empty_dirs=(), state_dir=runc_state,
                             name="pg-nopass", timeout=60)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD is not set" in proc.stderr


# ---- the cache -----------------------------------------------------------------------------

def test_a_warm_build_rebuilds_nothing(built):
    # The fixture's wheel, not a new one: other work may be editing the checkout meanwhile.
    wheel = Path(built["foundry"].wheel)
    first = {b.name: b for b in ensure_built(wheel=wheel)}
    before = {n: (b.tar, b.tar.stat().st_mtime_ns, b.key) for n, b in first.items()}
    started = time.monotonic()
    again = {b.name: b for b in ensure_built(wheel=wheel)}
    elapsed = time.monotonic() - started
    assert {n: (b.tar, b.tar.stat().st_mtime_ns, b.key) for n, b in again.items()} == before
    assert {n: b.key for n, b in first.items()} == {n: b.key for n, b in built.items()}, "same inputs, same keys"
    assert elapsed < 30, f"a warm run took {elapsed:.1f} s"


def test_cache_keys_follow_the_inputs_only():
    base = {"deps": "a", "wheel": "w1", "config": {"x": 1}}
    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))
    assert cache_key(base) != cache_key({**base, "wheel": "w2"})
    cfg = image_config(DOCKERFILE.read_text(), {"VERSION": "1", "REVISION": "abc", "CREATED": "t1"}, BASE_ENV)
    later = image_config(DOCKERFILE.read_text(), {"VERSION": "1", "REVISION": "def", "CREATED": "t2"}, BASE_ENV)
    assert stable_config(cfg) == stable_config(later), "a new commit alone does not rebuild an image"
    bumped = image_config(DOCKERFILE.read_text(), {"VERSION": "2"}, BASE_ENV)
    assert stable_config(cfg) != stable_config(bumped)


def test_runtime_requirements_leave_extras_out():
    metadata = ("Metadata-Version: 2.4\nName: foundry\nRequires-Dist: kopf>=1.38\n"
                "Requires-Dist: pytest>=8; extra == 'test'\nRequires-Dist: tomli; python_version < '3.11'\n\nbody")
    assert runtime_requirements(metadata) == ["kopf>=1.38", "tomli; python_version < '3.11'"]


def test_dockerfile_reading():
    text = """ARG PY=3.11
FROM python:${PY} AS build
RUN echo build
FROM python:${PY}
ARG VERSION=0.0.0
# a comment
ENV A=1 \\
    # inside a continuation
    B="two words" \\
    PATH=/x/bin:$PATH
ENV LEGACY value with spaces
LABEL v="${VERSION}" other=plain
USER 10001:10001
WORKDIR /srv
WORKDIR app
EXPOSE 80 53/udp
ENTRYPOINT ["run", "it"]
CMD serve
"""
    cfg = image_config(text, {"VERSION": "9"}, {"PATH": "/usr/bin"})
    assert cfg.env == {"PATH": "/x/bin:/usr/bin", "A": "1", "B": "two words", "LEGACY": "value with spaces"}
    assert cfg.labels == {"v": "9", "other": "plain"}
    assert (cfg.user, cfg.workdir, cfg.entrypoint, cfg.cmd) == ("10001:10001", "/srv/app", ["run", "it"],
                                                                ["/bin/sh", "-c", "serve"])
    assert cfg.exposed_ports == ["80/tcp", "53/udp"]
    assert global_args(text) == {"PY": "3.11"}
    assert json.dumps(copies_from_context("COPY --from=build /a /b\nCOPY x y ./\n")) == '["x", "y"]'
