"""Foundry's container images, built on this machine without Docker or a registry.

Three images, under the names the chart (and the kubelet) use:

| image | ref | from |
|---|---|---|
| Foundry (operator, bridge, migration hook) | values.yaml `image.repository`:appVersion | operator/Dockerfile |
| the agent runner | ghcr.io/foundry-dev/foundry-agent:appVersion | operator/Dockerfile.agent |
| PostgreSQL 15 | docker.io/library/postgres:15 | the official image's interface |

Each is a Debian bookworm root filesystem (foundry.dev.rootfs) plus, in a
chroot, the Debian packages, virtualenvs and files its recipe names
(tools/images/steps.sh mirrors the Dockerfiles' steps), made an OCI image with
umoci and exported with skopeo as a docker-archive tarball that containerd
imports under the ref. The runtime config (entrypoint, cmd, user, env, workdir,
ports, labels) is read from the Dockerfile's final stage, so the Dockerfiles
remain the one description of each image.

Two layers per image, each cached by a hash of its inputs: the dependencies
(rootfs id, packages, step scripts, the wheel's requirements, the CLIs' versions)
and on top the Foundry wheel alone. A warm run rebuilds nothing; a code change
rebuilds only the wheel layer (seconds). Everything lives under
~/.cache/foundry/images/, behind one flock.

    ensure_images() -> {ref: tarball}
    python -m foundry.dev.images [--json]     (tools/images.sh, `make images`)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from foundry import __version__
from foundry.paths import REPO_ROOT, cache_dir
from foundry.dev import oci
from foundry.dev.dockerfile import ImageConfig, image_config
from foundry.dev.rootfs import (BUILD_DIR, DEFAULT_PATH, Bind, RootfsError, copy_tree, ensure_rootfs,
                                    host_apt_sources, image_sources_text, locked, run_in_root, say)

SCRIPTS = REPO_ROOT / "tools" / "images"
AGENT_CLIS_SH = REPO_ROOT / "tools" / "agent-clis.sh"
AGENT_REPOSITORY = "ghcr.io/foundry-dev/foundry-agent"
POSTGRES_REF = "docker.io/library/postgres:15"
POSTGRES_MAJOR = "15"
# The build tools run on the host, pinned so the wheel's bytes depend only on the sources.
BUILD_TOOLS = ("hatchling==1.33.0", "installer==1.1.0")
# What the Dockerfiles' base (python:3.11-slim-bookworm) puts in the environment
# that matters here; its PYTHON_VERSION/GPG_KEY describe an interpreter these images
# do not have (they use Debian's python3.11).
BASE_ENV = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
# Labels whose values change with every build, not with the image's content.
VOLATILE_LABELS = ("org.opencontainers.image.revision", "org.opencontainers.image.created")


class ImageBuildError(RuntimeError):
    pass


# ---- what each image is (pure) ------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    name: str
    ref: str
    packages: tuple[str, ...]
    build_packages: tuple[str, ...] = ()
    pre_steps: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    files: tuple[str, ...] = ()          # under tools/images/, copied to /run/foundry-build/files/
    dockerfile: str = ""                 # the config's source, relative to the repository
    config: ImageConfig | None = None    # the config, when there is no Dockerfile
    wheel: bool = False                  # /opt/foundry gets the Foundry wheel as the top layer
    agent_clis: bool = False             # /opt/agent-clis gets Claude Code and Codex
    base: str = ""                       # another recipe whose dependency layer this one builds on


def recipes(foundry_ref: str, agent_ref: str, postgres_ref: str = POSTGRES_REF) -> list[Recipe]:
    python = ("python3",)
    # Named one by one: purging python3-venv alone leaves the pip and setuptools wheels behind.
    venv = ("python3-venv", "python3.11-venv", "python3-pip-whl", "python3-setuptools-whl")
    return [
        Recipe("foundry", foundry_ref, packages=python + ("ca-certificates",), build_packages=venv,
               steps=("step_foundry_venv", "step_foundry_user"),
               dockerfile="operator/Dockerfile", wheel=True),
        # On the Foundry image's dependency layer: the two images share it (built once, stored once).
        Recipe("foundry-agent", agent_ref, packages=("git", "nodejs"), build_packages=venv,
               steps=("step_aider", "step_agent_user", "step_agent_links"),
               dockerfile="operator/Dockerfile.agent", wheel=True, agent_clis=True, base="foundry"),
        Recipe("postgres", postgres_ref, packages=(f"postgresql-{POSTGRES_MAJOR}",),
               pre_steps=("step_postgres_user",), steps=("step_postgres_files",),
               files=("postgres-entrypoint.sh",), config=postgres_config()),
    ]


def postgres_config() -> ImageConfig:
    """The official postgres image's runtime interface (root start, drops to uid 999 itself)."""
    data = "/var/lib/postgresql/data"
    return ImageConfig(
        entrypoint=["docker-entrypoint.sh"], cmd=["postgres"], user="", workdir="/",
        env={"PATH": f"{DEFAULT_PATH}:/usr/lib/postgresql/{POSTGRES_MAJOR}/bin", "LANG": "C.UTF-8",
             "PG_MAJOR": POSTGRES_MAJOR, "PGDATA": data},
        labels={"org.opencontainers.image.title": "postgres",
                "org.opencontainers.image.description":
                    f"PostgreSQL {POSTGRES_MAJOR} from Debian bookworm, built locally for Foundry's test bed",
                "org.opencontainers.image.version": POSTGRES_MAJOR},
        exposed_ports=["5432/tcp"], volumes=[data], stop_signal="SIGINT")


def runtime_requirements(metadata: str) -> list[str]:
    """The wheel's Requires-Dist lines that apply without extras."""
    out = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if not re.search(r"\bextra\s*==", req):
                out.append(req)
        elif not line.strip():
            break  # the headers end at the first blank line
    return out


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def stable_config(config: ImageConfig) -> dict[str, Any]:
    """The config as part of a cache key: volatile labels (revision, created) left out."""
    d = dataclasses.asdict(config)
    d["labels"] = {k: v for k, v in d["labels"].items() if k not in VOLATILE_LABELS}
    return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- what the chart and the pins say (reads files) -----------------------------------

def chart_refs() -> tuple[str, str]:
    """(Foundry image ref, agent image ref) at the chart's appVersion, which must be Foundry's version."""
    chart = yaml.safe_load((REPO_ROOT / "helm/foundry/Chart.yaml").read_text())
    values = yaml.safe_load((REPO_ROOT / "helm/foundry/values.yaml").read_text())
    app_version = str(chart["appVersion"])
    if app_version != __version__:
        raise ImageBuildError(f"helm/foundry/Chart.yaml appVersion {app_version} != foundry {__version__}: "
                              "bump them together")
    return f"{values['image']['repository']}:{app_version}", f"{AGENT_REPOSITORY}:{app_version}"


def agent_cli_versions() -> dict[str, str]:
    """The pins of tools/agent-clis.sh: {"claude-code": ..., "codex": ..., "aider": ...}."""
    proc = subprocess.run(["bash", str(AGENT_CLIS_SH), "--versions"], capture_output=True, text=True, check=True)
    return dict(line.split(None, 1) for line in proc.stdout.strip().splitlines())


def agent_cli_dirs(versions: dict[str, str]) -> dict[str, Path]:
    """The npm installs of Claude Code and Codex that tools/agent-clis.sh made (it installs them if missing)."""
    proc = subprocess.run(["bash", str(AGENT_CLIS_SH)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"{AGENT_CLIS_SH} could not install the agent CLIs (exit {proc.returncode}); see above")
    base = cache_dir() / "agent-clis"
    dirs = {name: base / f"{name}-{versions[name]}" for name in ("claude-code", "codex")}
    for name, d in dirs.items():
        if not (d / "node_modules/.bin").is_dir():
            raise ImageBuildError(f"{d} has no node_modules/.bin: tools/agent-clis.sh's layout changed?")
    return dirs


def git_revision() -> str:
    proc = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


# ---- the cache ------------------------------------------------------------------------

def images_cache() -> Path:
    return cache_dir() / "images"


@dataclass
class BuiltImage:
    name: str
    ref: str
    tar: Path
    layout: Path      # the OCI layout the tar was exported from
    tag: str          # the image's tag in it
    key: str
    size_bytes: int = 0
    built_seconds: float = 0.0
    wheel: str = ""   # the Foundry wheel inside (empty for PostgreSQL)
    inputs: dict[str, Any] = field(default_factory=dict)


def _tools_python() -> Path:
    """A venv with the pinned build tools (hatchling for the wheel, installer for the wheel layer)."""
    venv = images_cache() / ("tools-" + cache_key({"tools": BUILD_TOOLS, "python": sys.version_info[:2]}))
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        say("images", f"installing {', '.join(BUILD_TOOLS)} into {venv}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", *BUILD_TOOLS])
        if proc.returncode != 0:
            raise ImageBuildError(f"pip install {' '.join(BUILD_TOOLS)} failed (exit {proc.returncode})")
        (venv / ".complete").touch()
    return py


KEEP_WHEELS = 10


def build_wheel() -> Path:
    """The Foundry wheel of the checkout, stored by its hash (hatchling writes reproducible wheels)."""
    wheels = images_cache() / "wheels"
    out = wheels / f"tmp-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = subprocess.run([str(_tools_python()), "-c",
                           "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))",
                           str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"building the Foundry wheel failed: {proc.stderr.strip()[-2000:]}")
    built = out / proc.stdout.strip().splitlines()[-1]
    final = wheels / sha256_file(built)[:16] / built.name
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        built.rename(final)
    shutil.rmtree(out, ignore_errors=True)
    os.utime(final.parent)
    # Every edit of the checkout makes a new wheel: keep the recent ones only.
    for old in sorted((d for d in wheels.iterdir() if d.is_dir() and not d.name.startswith("tmp-")),
                      key=lambda d: d.stat().st_mtime, reverse=True)[KEEP_WHEELS:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


_wheel_of_this_process: list[Path] = []


def _process_wheel() -> Path:
    """The checkout's wheel as it was at this process's first build.

    A test session tests one state of the checkout: while others edit it, every
    build would otherwise make a new wheel and re-export the 2 GB agent image,
    and the session's tests would judge different images. (A wheel pruned
    meanwhile is built again.)"""
    if not _wheel_of_this_process or not _wheel_of_this_process[0].exists():
        _wheel_of_this_process[:] = [build_wheel()]
    return _wheel_of_this_process[0]


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name).decode()


def _layout_tags(layout: Path) -> set[str]:
    if not (layout / "index.json").exists():
        return set()
    proc = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True, text=True)
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


# ---- building ---------------------------------------------------------------------------
# One OCI layout holds every image's tags, so layers an image shares with its base are
# stored once:   <name>_deps_<key>   the dependency layer(s), kept (slow to make)
#                <name>_img_<key>    the finished image (its config and wheel layer)

@dataclass
class _Inputs:
    rootfs: Path
    rootfs_id: str
    sources_text: str
    wheel: Path | None
    requirements: list[str]
    cli_versions: dict[str, str]
    revision: str


def _layout() -> Path:
    return images_cache() / "oci"


def _config(recipe: Recipe, revision: str, created: str) -> ImageConfig:
    if recipe.config is not None:
        return recipe.config
    text = (REPO_ROOT / recipe.dockerfile).read_text()
    return image_config(text, {"VERSION": __version__, "REVISION": revision, "CREATED": created}, BASE_ENV)


def _deps_key(recipe: Recipe, inp: _Inputs, by_name: dict[str, Recipe]) -> tuple[str, dict[str, Any]]:
    scripts = {p.name: sha256_file(p) for p in (SCRIPTS / "build-root.sh", SCRIPTS / "steps.sh")}
    scripts.update({f: sha256_file(SCRIPTS / f) for f in recipe.files})
    parts: dict[str, Any] = {
        "recipe": [recipe.name, recipe.packages, recipe.build_packages, recipe.pre_steps, recipe.steps],
        "sources": inp.sources_text, "scripts": scripts,
    }
    if recipe.base:
        parts["base"] = _deps_key(by_name[recipe.base], inp, by_name)[0]
    else:
        parts["rootfs"] = inp.rootfs_id
    if "step_foundry_venv" in recipe.steps:
        parts["requirements"] = inp.requirements
    if "step_aider" in recipe.steps or recipe.agent_clis:
        parts["agent-clis"] = inp.cli_versions
    return cache_key(parts), parts


def _build_deps(recipe: Recipe, inp: _Inputs, tag: str, base_tag: str, log: Path) -> None:
    """The dependency layer (packages, venvs, users, files) on the rootfs or on base_tag, saved as tag."""
    layout = _layout()
    bundle = images_cache() / "work" / f"bundle-{tag}"
    building = f"{recipe.name}_building"
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    try:
        if base_tag:
            subprocess.run(["umoci", "tag", "--image", f"{layout}:{base_tag}", building], check=True)
            rootfs = oci.unpack(layout, building, bundle)
        else:
            oci.new_image(layout, building)
            rootfs = oci.unpack(layout, building, bundle)
            copy_tree(inp.rootfs, rootfs)
        build = rootfs / BUILD_DIR
        build.mkdir(parents=True, exist_ok=True)
        for script in ("build-root.sh", "steps.sh"):
            shutil.copy2(SCRIPTS / script, build / script)
        (build / "files").mkdir()
        for f in recipe.files:
            shutil.copy2(SCRIPTS / f, build / "files" / f)
        (build / "debian.sources").write_text(inp.sources_text)
        (build / "requirements.txt").write_text("\n".join(inp.requirements) + "\n")
        if recipe.agent_clis:
            for name, src in agent_cli_dirs(inp.cli_versions).items():
                dst = rootfs / "opt/agent-clis" / name
                copy_tree(src, dst)
                (dst / ".complete").unlink(missing_ok=True)
        pip_cache = images_cache() / "pip-cache"
        pip_cache.mkdir(parents=True, exist_ok=True)
        binds = (Bind(pip_cache, f"{BUILD_DIR}/pip-cache", read_only=False),
                 Bind(Path("/etc/ssl/certs/ca-certificates.crt"), f"{BUILD_DIR}/host-ca.crt"))
        env = {"PACKAGES": " ".join(recipe.packages), "BUILD_PACKAGES": " ".join(recipe.build_packages),
               "PRE_STEPS": " ".join(recipe.pre_steps), "STEPS": " ".join(recipe.steps),
               "PIP_CACHE_DIR": f"/{BUILD_DIR}/pip-cache", "PIP_CERT": f"/{BUILD_DIR}/host-ca.crt",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "180", "PIP_ROOT_USER_ACTION": "ignore",
               "AIDER_VERSION": inp.cli_versions.get("aider", "")}
        run_in_root(rootfs, f"sh /{BUILD_DIR}/build-root.sh", env=env, binds=binds, log=log,
                    what=f"{recipe.name}: packages and steps")
        shutil.rmtree(build)
        # The chroot borrowed the host's; the container runtime provides its own.
        for f in ("etc/resolv.conf", "etc/hostname"):
            (rootfs / f).write_text("")
        python = _python_version(rootfs)
        oci.repack(layout, building, bundle, f"foundry.dev.images: {recipe.name} dependencies")
        subprocess.run(["umoci", "tag", "--image", f"{layout}:{building}", tag], check=True)
        (images_cache() / recipe.name / f"{tag}.json").write_text(json.dumps({"python": python}))
    finally:
        subprocess.run(["umoci", "rm", "--image", f"{layout}:{building}"], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)


def _python_version(rootfs: Path) -> str:
    found = sorted(p.name for p in (rootfs / "usr/lib").glob("python3.*") if (p / "os.py").exists())
    return found[-1].removeprefix("python") if found else ""


# Bumped when the way the wheel layer is made changes, so cached images are remade.
WHEEL_LAYER_FORMAT = 2
# The wheel layer's timestamps: fixed, so the same wheel always makes the same layer.
LAYER_MTIME = 1580601600  # hatchling's own default SOURCE_DATE_EPOCH


def _wheel_layer(wheel: Path, python: str, stage: Path) -> Path:
    """A layer tarball of /opt/foundry's new files for the wheel, installed outside the chroot.

    The wheel is pure Python, so installing it is unpacking it (pypa/installer):
    no chroot needed. Bytecode is compiled for the image's Python when the host's
    matches, as unchecked-hash .pyc files (the image never changes under them).
    """
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    script = r"""
import compileall, py_compile, sys
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
wheel, stage, py = sys.argv[1:4]
site = f"/opt/foundry/lib/python{py}/site-packages"
scheme = {"purelib": site, "platlib": site, "scripts": "/opt/foundry/bin", "data": "/opt/foundry",
          "headers": f"/opt/foundry/include/site/python{py}/foundry"}
dest = SchemeDictionaryDestination(scheme, interpreter="/opt/foundry/bin/python", script_kind="posix",
                                   destdir=stage, bytecode_optimization_levels=())
with WheelFile.open(wheel) as source:
    install(source, dest, {"INSTALLER": b"foundry-images\n"})
if f"{sys.version_info[0]}.{sys.version_info[1]}" == py:
    ok = compileall.compile_dir(stage + site, quiet=1, stripdir=stage, prependdir="/",
                                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    sys.exit(0 if ok else 1)
"""
    subprocess.run([str(_tools_python()), "-c", script, str(wheel), str(stage), python], check=True)
    tar = stage.with_suffix(".tar")

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = LAYER_MTIME
        if info.isdir():
            info.mode = 0o755
        return info

    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(stage.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(stage)), recursive=False, filter=normalise)
    shutil.rmtree(stage)
    return tar


def _build(recipe: Recipe, inp: _Inputs, by_name: dict[str, Recipe]) -> BuiltImage:
    layout = _layout()
    entry = images_cache() / recipe.name
    log = entry / "build.log"
    entry.mkdir(parents=True, exist_ok=True)
    deps_key, deps_parts = _deps_key(recipe, inp, by_name)
    deps_tag = f"{recipe.name}_deps_{deps_key}"
    final_parts = {"deps": deps_key, "config": stable_config(_config(recipe, "unknown", "unknown")),
                   "layer": WHEEL_LAYER_FORMAT,
                   "wheel": sha256_file(inp.wheel) if recipe.wheel and inp.wheel else None}
    key = cache_key(final_parts)
    tag = f"{recipe.name}_img_{key}"
    tar = entry / f"{recipe.name}-{key}.tar"
    meta = entry / f"{recipe.name}-{key}.json"
    if tar.exists() and meta.exists() and tag in _layout_tags(layout):
        os.utime(meta)  # recently used: the last to be pruned
        return BuiltImage(**{**json.loads(meta.read_text()), "tar": tar, "layout": layout,
                             "wheel": str(inp.wheel) if recipe.wheel else ""})

    started = time.monotonic()
    if deps_tag not in _layout_tags(layout):
        base_tag = ""
        if recipe.base:
            base_tag = f"{recipe.base}_deps_{_deps_key(by_name[recipe.base], inp, by_name)[0]}"
            if base_tag not in _layout_tags(layout):
                _build_deps_logged(by_name[recipe.base], inp, base_tag, "")
        _build_deps_logged(recipe, inp, deps_tag, base_tag)
    info = json.loads((entry / f"{deps_tag}.json").read_text())
    base = deps_tag
    if recipe.wheel:
        assert inp.wheel is not None
        say("images", f"{recipe.name}: adding the wheel layer ({inp.wheel.name})")
        layer = _wheel_layer(inp.wheel, info["python"], images_cache() / "work" / f"{recipe.name}-wheel")
        base = f"{recipe.name}_wheel_{key}"
        oci.add_layer(layout, deps_tag, base, layer, f"foundry.dev.images: {inp.wheel.name}")
        layer.unlink()
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    oci.configure(layout, base, tag, _config(recipe, inp.revision, created), created=created,
                  author="foundry.dev.images")
    partial = tar.with_suffix(".tar.partial")
    oci.export_docker_archive(layout, tag, partial, recipe.ref)
    partial.rename(tar)
    built = BuiltImage(recipe.name, recipe.ref, tar, layout, tag, key, tar.stat().st_size,
                       round(time.monotonic() - started, 1), str(inp.wheel) if recipe.wheel else "",
                       {"deps": deps_parts, "image": final_parts})
    record = dataclasses.asdict(built)
    record.pop("tar"), record.pop("layout")
    meta.write_text(json.dumps(record, indent=1, default=str))
    _prune(recipe.name, layout, keep=KEEP_IMAGES)
    say("images", f"{recipe.name}: {recipe.ref} -> {tar} ({built.size_bytes / 1e6:.0f} MB, {built.built_seconds} s)")
    return built


# Finished images kept per name: builds from different checkouts (or a checkout that
# changes under a running test) do not evict each other's images at once.
KEEP_IMAGES = 3


def _prune(name: str, layout: Path, keep: int) -> None:
    """Drop all but the newest `keep` finished images of name (tags and tarballs); dependency layers stay."""
    entry = images_cache() / name
    metas = sorted(entry.glob(f"{name}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    keep_keys = {m.stem.removeprefix(f"{name}-") for m in metas[:keep]}
    for old in [*entry.glob(f"{name}-*.tar"), *metas]:
        if old.stem.removeprefix(f"{name}-") not in keep_keys:
            old.unlink(missing_ok=True)
    stale = {t for t in _layout_tags(layout) if t.startswith((f"{name}_img_", f"{name}_wheel_"))
             and t.rsplit("_", 1)[-1] not in keep_keys}
    if stale:
        oci.remove_tags(layout, stale, gc=_gc_due(layout))


# A pruned image leaves a wheel layer and a config behind (about a megabyte), but
# collecting them costs minutes (umoci gc verifies every blob): once a day is enough.
GC_EVERY_S = 24 * 3600


def _gc_due(layout: Path) -> bool:
    stamp = layout.parent / ".last-gc"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < GC_EVERY_S:
        return False
    stamp.touch()
    return True


def _build_deps_logged(recipe: Recipe, inp: _Inputs, tag: str, base_tag: str) -> None:
    log = images_cache() / recipe.name / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    on = f" on {base_tag}" if base_tag else ""
    say("images", f"{recipe.name}: building the dependency layer {tag}{on} (log {log})")
    t = time.monotonic()
    _build_deps(recipe, inp, tag, base_tag, log)
    say("images", f"{recipe.name}: dependency layer in {time.monotonic() - t:.0f} s")


def ensure_built(names: tuple[str, ...] | None = None, *, wheel: Path | None = None) -> list[BuiltImage]:
    """Build (or reuse) the images; names limits which (default: all three).

    wheel: put this Foundry wheel in the images instead of one built from the checkout.
    """
    foundry_ref, agent_ref = chart_refs()
    todo = [r for r in recipes(foundry_ref, agent_ref) if names is None or r.name in names]
    needs_wheel = any(r.wheel for r in todo)
    if names and len(todo) != len(names):
        raise ImageBuildError(f"unknown image in {names}; known: foundry, foundry-agent, postgres")
    for tool in ("umoci", "skopeo", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} is missing: apt-get install umoci skopeo debootstrap util-linux")
    with locked(images_cache() / ".lock", "images"):
        rootfs, rid = ensure_rootfs()
        if wheel is None and needs_wheel:
            wheel = _process_wheel()
        inp = _Inputs(rootfs=rootfs, rootfs_id=rid, sources_text=image_sources_text(host_apt_sources()),
                      wheel=wheel, requirements=runtime_requirements(wheel_metadata(wheel)) if wheel else [],
                      cli_versions=agent_cli_versions() if any(r.agent_clis for r in todo) else {},
                      revision=git_revision())
        by_name = {r.name: r for r in recipes(foundry_ref, agent_ref)}
        return [_build(r, inp, by_name) for r in todo]


def ensure_images(names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """{image ref: docker-archive tarball} for Foundry's images, built or reused."""
    return {b.ref: b.tar for b in ensure_built(names)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/images.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="foundry, foundry-agent, postgres (default: all)")
    parser.add_argument("--json", action="store_true", help="print the built images as JSON")
    args = parser.parse_args(argv)
    # A plain SIGTERM would skip the cleanup (and leave a chroot build running).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        built = ensure_built(tuple(args.names) or None)
    except (ImageBuildError, RootfsError, oci.OciError) as exc:
        print(f"[images] error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"name": b.name, "ref": b.ref, "tar": str(b.tar), "size_bytes": b.size_bytes,
                           "key": b.key} for b in built], indent=1))
    else:
        for b in built:
            print(f"{b.ref} {b.tar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
