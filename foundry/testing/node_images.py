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
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from foundry.testing.node_config import PAUSE_IMAGE

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
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{name}.c"
        src.write_text(source)
        _run([gcc, "-static", "-Os", "-s", "-o", str(out.with_suffix(".tmp")), str(src)])
    out.with_suffix(".tmp").rename(out)
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
def import_image(tar_path: Path | str, ref: str, *, address: Path | str) -> str:
    """Load a docker-archive (or OCI archive) tarball into the containerd at
    `address` (its socket) under `ref`, in the namespace the kubelet uses.
    Returns the normalised name. Idempotent: importing the same tarball again
    only re-tags."""
    ctr = _need("ctr")
    sock = Path(address)
    # ctr waits ~10 s on a missing socket before failing; say so at once.
    if not sock.is_socket():
        raise ImageError(f"no containerd socket at {sock}: is the node running?")
    want = normalize_ref(ref)
    base = [ctr, "--address", str(sock), "--namespace", "k8s.io"]
    out = _run(base + ["images", "import", str(tar_path)]).stdout
    # "unpacking docker.io/library/x:1 (sha256:...)...done"
    names = [line.split()[1] for line in out.splitlines() if line.startswith("unpacking ")]
    if want not in names and want not in image_names(sock):
        if not names:
            raise ImageError(f"ctr imported nothing from {tar_path}:\n{out}")
        _run(base + ["images", "tag", "--force", names[0], want])
    return want


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
