"""OCI images from directories, without a Docker engine: umoci builds, skopeo exports, runc runs.

An OCI layout per image (umoci), exported as a docker-archive tarball under the
chart's image name (skopeo), which containerd imports as is. The same layout can
be unpacked into a runtime bundle and run with runc, which is how the tests look
inside an image as its own user, with its own environment and entrypoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from foundry.dev.dockerfile import ImageConfig


class OciError(RuntimeError):
    pass


def _run(args: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise OciError(f"{what}: {' '.join(args[:3])} … exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def new_image(layout: Path, tag: str) -> None:
    if not (layout / "index.json").exists():
        _run(["umoci", "init", "--layout", str(layout)], "umoci init")
    _run(["umoci", "new", "--image", f"{layout}:{tag}"], "umoci new")


def unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """A runtime bundle (config.json + rootfs/) of the image; returns the rootfs."""
    _run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], "umoci unpack")
    return bundle / "rootfs"


def repack(layout: Path, tag: str, bundle: Path, created_by: str) -> None:
    """Every change under bundle/rootfs since unpack becomes one new layer."""
    _run(["umoci", "repack", "--image", f"{layout}:{tag}", "--history.created_by", created_by, str(bundle)],
         "umoci repack")


def add_layer(layout: Path, tag: str, new_tag: str, layer_tar: Path, created_by: str) -> None:
    """layer_tar (uncompressed, paths relative to /) on top of tag, saved as new_tag.

    (umoci insert would make the layer from a directory, but umoci 0.4.7 writes
    it truncated: the tarball's end is missing.)
    """
    _run(["umoci", "raw", "add-layer", "--image", f"{layout}:{tag}", "--tag", new_tag,
          "--history.created_by", created_by, str(layer_tar)], "umoci raw add-layer")


def configure(layout: Path, tag: str, new_tag: str, config: ImageConfig, *, created: str, author: str) -> None:
    """Set the whole runtime config (entrypoint, cmd, user, env, workdir, ports, labels) as new_tag."""
    args = ["umoci", "config", "--image", f"{layout}:{tag}", "--tag", new_tag, "--no-history",
            "--created", created, "--author", author,
            "--clear=config.env", "--clear=config.entrypoint", "--clear=config.cmd",
            "--clear=config.labels", "--clear=config.exposedports", "--clear=config.volume",
            "--config.user", config.user, "--config.workingdir", config.workdir or "/"]
    args += [f"--config.entrypoint={x}" for x in config.entrypoint]
    args += [f"--config.cmd={x}" for x in config.cmd]
    args += [f"--config.env={k}={v}" for k, v in config.env.items()]
    args += [f"--config.label={k}={v}" for k, v in config.labels.items()]
    args += [f"--config.exposedports={p}" for p in config.exposed_ports]
    args += [f"--config.volume={v}" for v in config.volumes]
    if config.stop_signal:
        args += ["--config.stopsignal", config.stop_signal]
    _run(args, "umoci config")


def remove_tags(layout: Path, tags: set[str], *, gc: bool = True) -> None:
    """Drop these tags and (with gc) the blobs only they used.

    umoci gc reads and verifies every blob still referenced (gigabytes here),
    which takes minutes: callers with little garbage can leave it for later.
    """
    for tag in sorted(tags):
        _run(["umoci", "rm", "--image", f"{layout}:{tag}"], "umoci rm")
    if gc:
        _run(["umoci", "gc", "--layout", str(layout)], "umoci gc")


def export_docker_archive(layout: Path, tag: str, tar: Path, ref: str) -> None:
    """A `docker save`-style tarball naming ref: what `ctr images import` loads under that name."""
    tar.unlink(missing_ok=True)
    _run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"docker-archive:{tar}:{ref}"], "skopeo copy")


# ---- reading an exported image (the artifact containerd gets) -------------------

def archive_manifest(tar: Path) -> dict[str, Any]:
    with tarfile.open(tar) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    if len(manifest) != 1:
        raise OciError(f"{tar}: expected one image, found {len(manifest)}")
    return manifest[0]


def archive_config(tar: Path) -> dict[str, Any]:
    """The image config JSON (os, architecture, config{Entrypoint, User, Env, ...}, rootfs, history)."""
    entry = archive_manifest(tar)
    with tarfile.open(tar) as tf:
        return json.load(tf.extractfile(entry["Config"]))  # type: ignore[arg-type]


def archive_files(tar: Path) -> set[str]:
    """Every path in the image's layers (relative, no leading slash), whiteouts applied."""
    entry = archive_manifest(tar)
    paths: set[str] = set()
    with tarfile.open(tar) as tf:
        for layer_name in entry["Layers"]:
            layer = tf.extractfile(layer_name)
            with tarfile.open(fileobj=layer, mode="r|*") as lt:
                for member in lt:
                    name = member.name.lstrip("./").rstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        gone = name[: -len(base)] + base[4:]
                        paths = {p for p in paths if p != gone and not p.startswith(gone + "/")}
                        continue
                    paths.add(name)
    return paths


# ---- running an image with runc (tests) -----------------------------------------

def bundle_from_archive(tar: Path, bundle: Path) -> dict[str, Any]:
    """A runc bundle (rootfs/ + the runtime config) of a docker-archive, as containerd would unpack it.

    The layers are applied in order, whiteouts included, straight from the
    tarball containerd imports; the runtime config is derived from the image
    config the way a container runtime does: Entrypoint + Cmd, Env, WorkingDir,
    User (numeric, or a name looked up in the image's /etc/passwd).
    """
    if bundle.exists():
        shutil.rmtree(bundle)
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    entry = archive_manifest(tar)
    _apply_layers(tar, entry["Layers"], rootfs)
    return _write_runtime(tar, entry, bundle)


def _apply_layers(tar: Path, layer_names: list[str], rootfs: Path) -> None:
    with tarfile.open(tar) as outer:
        for layer_name in layer_names:
            member = outer.getmember(layer_name)
            while member.issym():  # docker-archive: <id>/layer.tar -> ../<digest>.tar
                member = outer.getmember(str(Path(layer_name).parent / member.linkname).replace("../", ""))
            with outer.extractfile(member) as layer:  # type: ignore[union-attr]
                _apply_layer(layer, rootfs)


def _write_runtime(tar: Path, entry: dict[str, Any], bundle: Path) -> dict[str, Any]:
    with tarfile.open(tar) as outer:
        config = json.load(outer.extractfile(entry["Config"]))["config"]  # type: ignore[arg-type]
    rootfs = bundle / "rootfs"
    runtime = _default_runtime_config()
    process = runtime["process"]
    process["args"] = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
    process["env"] = config.get("Env") or []
    process["cwd"] = config.get("WorkingDir") or "/"
    process["user"] = _resolve_user(config.get("User") or "", rootfs)
    runtime["root"] = {"path": "rootfs", "readonly": False}
    (bundle / "config.json").write_text(json.dumps(runtime))
    return runtime


# ---- the same bundle, its lower layers unpacked once and kept ----------------------

KEEP_UNPACKED = 4  # layer stacks kept (an agent image's is about 2 GB unpacked)
PRUNE_AFTER_S = 6 * 3600
_DIGEST_NAME = re.compile(r"^[0-9a-f]{64}\.tar$")


def cached_bundle(tar: Path, bundle: Path, cache: Path) -> dict[str, Any]:
    """bundle_from_archive, faster: the image's layers but the top one are
    unpacked once into `cache` (keyed by their digests) and mounted read-only
    as an overlay's lower directory; the top layer (a Foundry image's wheel,
    which changes with every checkout) is applied on the overlay, like
    everything written later, into a fresh upper directory inside `bundle`.
    The root the container sees is the same. Release with release_bundle().

    Archives whose layers are not named by digest are unpacked in full.
    """
    entry = archive_manifest(tar)
    layers: list[str] = entry["Layers"]
    if not all(_DIGEST_NAME.match(name) for name in layers):
        return bundle_from_archive(tar, bundle)
    lower_layers, top = (layers[:-1], layers[-1:]) if len(layers) > 1 else (layers, [])
    lower = _unpacked_stack(tar, lower_layers, cache)
    release_bundle(bundle)
    rootfs = bundle / "rootfs"
    upper, work = bundle / "overlay" / "upper", bundle / "overlay" / "work"
    for d in (rootfs, upper, work):
        d.mkdir(parents=True)
    _run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(rootfs)],
         "mount overlay")
    try:
        _apply_layers(tar, top, rootfs)
        return _write_runtime(tar, entry, bundle)
    except BaseException:
        release_bundle(bundle)
        raise


def release_bundle(bundle: Path) -> None:
    """Unmount a cached_bundle's root (if mounted) and remove the bundle."""
    rootfs = bundle / "rootfs"
    if rootfs.is_mount():
        _run(["umount", str(rootfs)], "umount overlay")
    shutil.rmtree(bundle, ignore_errors=True)


def _unpacked_stack(tar: Path, layer_names: list[str], cache: Path) -> Path:
    """These layers applied in order, in a directory of `cache` named by their
    digests; made once (into a temporary directory, renamed when complete)."""
    key = hashlib.sha256(" ".join(n.removesuffix(".tar") for n in layer_names).encode()).hexdigest()[:24]
    done = cache / key
    if done.is_dir():
        os.utime(done)  # recently used: the last to be pruned
        return done
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    try:
        _apply_layers(tar, layer_names, tmp)
        tmp.chmod(0o755)
        try:
            tmp.rename(done)
        except OSError:  # another session finished the same stack first
            if not done.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stacks = sorted((d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(".")),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    # Beyond the newest few, stacks unused for a while go (one in use by
    # another session right now is recent, so it stays under its overlay).
    for old in stacks[KEEP_UNPACKED:]:
        if time.time() - old.stat().st_mtime > PRUNE_AFTER_S:
            shutil.rmtree(old, ignore_errors=True)
    return done


def _apply_layer(layer: Any, rootfs: Path) -> None:
    """Extract one uncompressed layer: whiteouts delete from the layers below, the rest is written."""
    with tarfile.open(fileobj=layer, mode="r|") as lt:
        for member in lt:
            name = member.name.lstrip("./")
            base = name.rsplit("/", 1)[-1]
            if base == ".wh..wh..opq":
                parent = rootfs / name[: -len(base)]
                for child in parent.iterdir() if parent.is_dir() else ():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
                continue
            if base.startswith(".wh."):
                gone = rootfs / (name[: -len(base)] + base[4:])
                if gone.is_dir() and not gone.is_symlink():
                    shutil.rmtree(gone)
                elif gone.exists() or gone.is_symlink():
                    gone.unlink()
                continue
            target = rootfs / name
            if (target.exists() or target.is_symlink()) and not (target.is_dir() and member.isdir()):
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            # numeric owners and modes as in the layer (we are root); "fully_trusted": our own images.
            lt.extract(member, rootfs, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def _resolve_user(user: str, rootfs: Path) -> dict[str, int]:
    if not user:
        return {"uid": 0, "gid": 0}
    name, _, group = user.partition(":")
    def lookup(file: str, key: str, col: int) -> int:
        if key.isdigit():
            return int(key)
        for line in (rootfs / "etc" / file).read_text().splitlines():
            parts = line.split(":")
            if parts[0] == key:
                return int(parts[col])
        raise OciError(f"user {user!r}: {key} is not in the image's /etc/{file}")
    uid = lookup("passwd", name, 2)
    gid = lookup("group", group, 2) if group else (
        next((int(l.split(":")[3]) for l in (rootfs / "etc/passwd").read_text().splitlines()
              if l.split(":")[2] == str(uid)), 0))
    return {"uid": uid, "gid": gid}


def _default_runtime_config() -> dict[str, Any]:
    """runc's own default spec (namespaces, /proc, /dev, masked paths), as `runc spec` writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["runc", "spec", "--bundle", tmp], check=True, capture_output=True)
        return json.loads((Path(tmp) / "config.json").read_text())


# What containerd gives a container that asks for nothing (a pod without a securityContext).
CONTAINERD_DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                           "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                           "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")


def run_in_bundle(bundle: Path, base_config: dict[str, Any], args: list[str] | None = None, *,
                  env: dict[str, str] | None = None, host_network: bool = False, read_only: bool = True,
                  user: tuple[int, int] | None = None, capabilities: tuple[str, ...] = CONTAINERD_DEFAULT_CAPS,
                  empty_dirs: tuple[str, ...] = ("/tmp",), binds: tuple[tuple[str, str], ...] = (),
                  state_dir: Path, name: str, timeout: float = 120,
                  background: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run the image as its config says (user, env, cwd, entrypoint), args replacing the whole argv if given.

    read_only and empty_dirs mirror the chart's pods: a read-only root, and
    fresh world-writable directories where the pod mounts emptyDirs; user and
    capabilities=() a restricted pod's runAsUser and `drop: [ALL]`.
    host_network lets a test reach a server in it.
    """
    config = json.loads(json.dumps(base_config))
    process = config["process"]
    process["terminal"] = False
    if args is not None:
        process["args"] = args
    if env:
        keep = [e for e in process.get("env", []) if e.split("=", 1)[0] not in env]
        process["env"] = keep + [f"{k}={v}" for k, v in env.items()]
    if user is not None:
        process["user"] = {"uid": user[0], "gid": user[1]}
    caps = list(capabilities)
    process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []}
    process["noNewPrivileges"] = True
    config["root"] = {"path": str(bundle / "rootfs"), "readonly": read_only}
    # runc reads config.json from the bundle: a per-run bundle dir pointing at the shared rootfs.
    run_dir = bundle.parent / f"{bundle.name}-{name}"
    run_dir.mkdir(exist_ok=True)
    mounts = config.setdefault("mounts", [])
    for i, target in enumerate(empty_dirs):
        source = run_dir / f"empty-{i}"
        source.mkdir()
        source.chmod(0o777)  # what the kubelet makes an emptyDir
        mounts.append({"destination": target, "type": "bind", "source": str(source), "options": ["rbind", "rw"]})
    for source_dir, target in binds:
        mounts.append({"destination": target, "type": "bind", "source": source_dir, "options": ["rbind", "rw"]})
    if host_network:
        namespaces = config["linux"]["namespaces"]
        config["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
    (run_dir / "config.json").write_text(json.dumps(config))
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["runc", "--root", str(state_dir), "run", "--bundle", str(run_dir), name]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run(["runc", "--root", str(state_dir), "delete", "--force", name], capture_output=True)
