"""Container images without a registry: build tiny OCI images from files on
this machine (umoci), turn them into docker-archive tarballs (skopeo), and
import tarballs into a node's containerd (ctr).

Built tarballs are cached under ~/.cache/foundry/images/, keyed by a hash of
everything that goes into them, so a warm run builds nothing.

    import_image(tar_path, ref, address=cluster.containerd_address)
    cluster.import_image(tar_path, ref)        # the same, on a NodeCluster

`ref` is the name pods use (``image:`` with ``imagePullPolicy: IfNotPresent``
or ``Never``); short names are normalised the way the kubelet does
("busybox:1" -> "docker.io/library/busybox:1").
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from foundry.dev.node_config import PAUSE_IMAGE

BUSYBOX_IMAGE = "foundry.local/busybox:1"
RECIPE_VERSION = "1"  # bump to invalidate every cached image built here

# The sandbox ("pause") process: it only holds the pod's namespaces open. As
# PID 1 of the sandbox it must reap orphans and exit on SIGTERM/SIGINT.
PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction stop = {0}, child = {0};
    stop.sa_handler = quit;
    child.sa_handler = reap;
    child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGTERM, &stop, 0);
    sigaction(SIGINT, &stop, 0);
    sigaction(SIGCHLD, &child, 0);
    for (;;) pause();
}
"""


class ImageError(RuntimeError):
    pass


def images_cache() -> Path:
    root = os.environ.get("FOUNDRY_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "foundry")
    path = Path(root) / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log(msg: str) -> None:
    print(f"[node-images] {msg}", file=sys.stderr, flush=True)


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise ImageError(f"{tool} is not installed: run `make node-runtime` (tools/node-runtime.sh)")
    return path


@contextmanager
def _locked(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def normalize_ref(ref: str) -> str:
    """The fully qualified name containerd stores and the kubelet asks for."""
    if "@" in ref:
        raise ImageError(f"{ref!r}: import by tag, not by digest")
    name, tag = ref, "latest"
    if ":" in ref.rsplit("/", 1)[-1]:
        name, tag = ref.rsplit(":", 1)
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


# ---- building ------------------------------------------------------------------
def build_rootfs_image(
    ref: str,
    files: dict[str, Path | bytes],
    *,
    entrypoint: list[str],
    cmd: list[str] | None = None,
    user: str = "65532",
    symlinks: dict[str, str] | None = None,
    extra_key: str = "",
) -> Path:
    """A single-layer image holding `files` (path in image -> host file or
    bytes, made executable) and `symlinks` (path -> target). Returns the cached
    docker-archive tarball; rebuilt only when any input changes."""
    h = hashlib.sha256(f"{RECIPE_VERSION}\0{ref}\0{entrypoint}\0{cmd}\0{user}\0{sorted((symlinks or {}).items())}\0{extra_key}".encode())
    for dest in sorted(files):
        src = files[dest]
        h.update(dest.encode() + b"\0" + (src if isinstance(src, bytes) else Path(src).read_bytes()))
    key = h.hexdigest()[:16]
    safe = ref.replace("/", "_").replace(":", "_")
    out = images_cache() / f"{safe}-{key}.tar"
    if out.exists():
        return out
    umoci, skopeo = _need("umoci"), _need("skopeo")
    with _locked(images_cache() / f".{safe}.lock"):
        if out.exists():
            return out
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="foundry-img-", dir=images_cache()) as tmp:
            layout, bundle = Path(tmp) / "oci", Path(tmp) / "bundle"
            _run([umoci, "init", "--layout", str(layout)])
            _run([umoci, "new", "--image", f"{layout}:img"])
            _run([umoci, "unpack", "--image", f"{layout}:img", str(bundle)])
            rootfs = bundle / "rootfs"
            for d in ("tmp", "etc", "proc", "sys", "dev"):
                (rootfs / d).mkdir(exist_ok=True)
            (rootfs / "tmp").chmod(0o1777)
            # Name lookups of the numeric users a pod may run as.
            (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\nnonroot:x:65532:65532:nonroot:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
            (rootfs / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n")
            for dest, src in files.items():
                target = rootfs / dest.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(src if isinstance(src, bytes) else Path(src).read_bytes())
                target.chmod(0o755)
            for dest, link in (symlinks or {}).items():
                target = rootfs / dest.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to(link)
            _run([umoci, "repack", "--image", f"{layout}:img", str(bundle)])
            config = [umoci, "config", "--image", f"{layout}:img", "--config.user", user, "--config.workingdir", "/"]
            config += [f"--config.entrypoint={e}" for e in entrypoint]
            config += [f"--config.cmd={c}" for c in cmd or []]
            config += ["--config.env", "PATH=/bin:/usr/bin"]
            _run(config)
            partial = out.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _run([skopeo, "copy", "--quiet", f"oci:{layout}:img", f"docker-archive:{partial}:{normalize_ref(ref)}"])
            partial.rename(out)
        _log(f"built {ref} in {time.monotonic() - started:.1f}s -> {out}")
    return out


def _static_binary(name: str, source: str) -> Path:
    """Compile a C file with gcc -static, cached by its source."""
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    out = images_cache() / "bin" / f"{name}-{key}"
    if out.exists():
        return out
    gcc = _need("gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Two pytest workers starting their nodes at once both come here on a fresh machine: one
    # compiles, the other waits and finds the result (they once shared a temporary name and
    # the second rename failed).
    with _locked(out.parent / f".{name}.lock"):
        if out.exists():
            return out
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src, built = Path(tmp) / f"{name}.c", Path(tmp) / name
            src.write_text(source)
            _run([gcc, "-static", "-Os", "-s", "-o", str(built), str(src)])
            built.rename(out)
    return out


def pause_image() -> Path:
    """The sandbox image (containerd's sandbox_image): one static binary, /pause."""
    return build_rootfs_image(PAUSE_IMAGE, {"/pause": _static_binary("pause", PAUSE_C)}, entrypoint=["/pause"])


def busybox_image() -> Path:
    """A shell for tests: the host's static busybox with a link per applet."""
    bb = Path("/bin/busybox")
    if not bb.exists():
        raise ImageError("/bin/busybox is missing: run `make node-runtime` (installs busybox-static)")
    applets = _run([str(bb), "--list"]).stdout.split()
    links = {f"/bin/{a}": "busybox" for a in applets if a != "busybox"}
    return build_rootfs_image(BUSYBOX_IMAGE, {"/bin/busybox": bb}, entrypoint=[], cmd=["/bin/sh"], symlinks=links)


# ---- importing -------------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def import_image(tar_path: Path | str, ref: str, *, address: Path | str) -> str:
    """Load a docker-archive (or OCI archive) tarball into the containerd at
    `address` (its socket) under `ref`, in the namespace the kubelet uses.
    Returns the normalised name. Idempotent: an image already there under
    `ref` with the same manifest is left alone, and of a new one only the
    layers containerd lacks are sent (a node keeps its image store across
    runs, so a changed wheel layer is all a warm run imports)."""
    ctr = _need("ctr")
    sock = Path(address)
    # ctr waits ~10 s on a missing socket before failing; say so at once.
    if not sock.is_socket():
        raise ImageError(f"no containerd socket at {sock}: is the node running?")
    want = normalize_ref(ref)
    archive = read_docker_archive(Path(tar_path))
    if archive is None:  # not a skopeo/docker-save archive whose files are named by digest
        return _ctr_import(ctr, sock, Path(tar_path), want)
    manifest = archive.manifest_bytes()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    if image_digests(sock).get(want) == digest:
        return want
    have = set(_ctr(ctr, sock, "content", "ls", "-q").split())
    proc = subprocess.Popen([ctr, "--address", str(sock), "--namespace", "k8s.io", "images", "import", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # ctr prints a line or two: its pipe cannot fill while we write.
        archive.write_oci_layout(proc.stdin, want, manifest, digest, skip=have)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ctr failed: its message follows
    out = proc.stdout.read().decode(errors="replace")
    if proc.wait() != 0:
        # A kept store whose content has a layer but not the snapshot unpacked from it (a node
        # stopped mid-import, say) refuses the unpack ("parent snapshot ... does not exist"):
        # send the whole archive once, as a cold store would get it, before giving up.
        try:
            return _ctr_import(ctr, sock, Path(tar_path), want)
        except ImageError as full:
            raise ImageError(f"ctr images import of {tar_path} as {want} failed ({proc.returncode}):\n"
                             f"{out.strip()}\nand again with every layer: {full}") from None
    if image_digests(sock).get(want) != digest:
        raise ImageError(f"ctr imported {tar_path} but containerd has no {want} at {digest}:\n{out}")
    return want


def _ctr(ctr: str, sock: Path, *args: str) -> str:
    return _run([ctr, "--address", str(sock), "--namespace", "k8s.io", *args]).stdout


def _ctr_import(ctr: str, sock: Path, tar_path: Path, want: str) -> str:
    out = _ctr(ctr, sock, "images", "import", str(tar_path))
    # "unpacking docker.io/library/x:1 (sha256:...)...done"
    names = [line.split()[1] for line in out.splitlines() if line.startswith("unpacking ")]
    if want not in names and want not in image_names(sock):
        if not names:
            raise ImageError(f"ctr imported nothing from {tar_path}:\n{out}")
        _ctr(ctr, sock, "images", "tag", "--force", names[0], want)
    return want


def image_digests(address: Path | str) -> dict[str, str]:
    """{image name: manifest digest} of what the containerd at `address` holds."""
    out = _ctr(_need("ctr"), Path(address), "images", "ls")
    rows = [line.split() for line in out.splitlines()[1:]]
    return {r[0]: r[2] for r in rows if len(r) > 2 and r[2].startswith("sha256:")}


@dataclass(frozen=True)
class DockerArchive:
    """A docker-archive tarball whose config and layer files are named by their
    sha256 (skopeo's and `docker save`'s layout): the digests are known without
    reading the layers, so an import can leave out what containerd already has."""

    path: Path
    config: tuple[str, int, bytes]             # (digest, size, bytes)
    layers: tuple[tuple[str, int, str], ...]   # (digest, size, member name), bottom first
    platform: dict

    def manifest_bytes(self) -> bytes:
        """A schema-2 manifest of the archive, serialised canonically: the same
        archive always gives the same digest, which is how an import sees that
        containerd already holds it."""
        doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
               "config": {"mediaType": DOCKER_CONFIG, "digest": self.config[0], "size": self.config[1]},
               "layers": [{"mediaType": DOCKER_LAYER, "digest": d, "size": n} for d, n, _ in self.layers]}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    def write_oci_layout(self, out, name: str, manifest: bytes, digest: str, *, skip: set[str]) -> None:
        """Stream an OCI layout tarball (what `ctr images import` reads) naming
        `name`, with every blob except the layers in `skip`."""
        import tarfile

        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(manifest),
            "annotations": {"io.containerd.image.name": name}, "platform": self.platform}]}
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
            def add(arcname: str, data: bytes) -> None:
                info = tarfile.TarInfo(arcname)
                info.size, info.mode = len(data), 0o444
                dst.addfile(info, io.BytesIO(data))

            add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add("index.json", json.dumps(index).encode())
            add(f"blobs/sha256/{digest[7:]}", manifest)
            add(f"blobs/sha256/{self.config[0][7:]}", self.config[2])
            with tarfile.open(self.path) as src:
                for layer_digest, size, member in self.layers:
                    if layer_digest in skip:
                        continue
                    info = tarfile.TarInfo(f"blobs/sha256/{layer_digest[7:]}")
                    info.size, info.mode = size, 0o444
                    with src.extractfile(member) as fh:  # type: ignore[union-attr]
                        dst.addfile(info, fh)


def read_docker_archive(path: Path) -> DockerArchive | None:
    """The archive's manifest, if its files are named by digest; None otherwise."""
    import re
    import tarfile

    named = re.compile(r"^([0-9a-f]{64})\.(tar|json)$")
    try:
        with tarfile.open(path) as tf:
            members = {m.name: m for m in tf.getmembers()}
            if "manifest.json" not in members:
                return None
            (entry,) = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
            config_match = named.match(entry["Config"])
            layer_matches = [named.match(name) for name in entry["Layers"]]
            if not config_match or not all(layer_matches) or any(n not in members for n in entry["Layers"]):
                return None
            config = tf.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
    except (OSError, ValueError, KeyError, tarfile.TarError):
        return None
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    if config_digest != f"sha256:{config_match.group(1)}":
        return None
    doc = json.loads(config)
    platform = {"architecture": doc.get("architecture", "amd64"), "os": doc.get("os", "linux")}
    layers = tuple((f"sha256:{m.group(1)}", members[name].size, name) for m, name in zip(layer_matches, entry["Layers"]))
    return DockerArchive(path, (config_digest, len(config), config), layers, platform)


def image_names(address: Path | str) -> list[str]:
    ctr = _need("ctr")
    out = _run([ctr, "--address", str(address), "--namespace", "k8s.io", "images", "ls", "-q"]).stdout
    return out.split()


def image_config(tar_path: Path | str) -> dict:
    """The image config (entrypoint, user, env, ...) inside a docker-archive tarball."""
    import tarfile

    with tarfile.open(tar_path) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        return json.load(tf.extractfile(manifest[0]["Config"]))
