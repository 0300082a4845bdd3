"""A node's containerd image store, kept across runs.

Importing the agent image (2 GB) into a fresh containerd takes minutes on a
2-core machine; with the store kept, a warm run imports nothing, and a new
wheel layer is all a changed checkout sends (node_images.import_image leaves
out the layers containerd has). So each slot's containerd `root` (images,
their content and unpacked snapshots) lives under ~/.cache/foundry/node-images/
instead of the run's state directory.

Only images survive. Before a node starts and after it stops, a containerd
without the CRI plugin (so nothing is recovered or started) opens the store and
deletes every container (each pod's sandbox and containers, with their
snapshots) and lease, and the CRI plugin's per-pod directories go: the next run
starts with images and nothing else. A store that cannot be scrubbed is wiped.

    store = store_dir(slot)          # None: this slot keeps nothing
    scrub(store, work_dir)           # only images remain
    stored_containers(store, work_dir)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from foundry.paths import cache_dir

# Stores kept for the first slots only: each holds a few GB, and a machine's
# sessions take the lowest free slot, so these are the ones runs come back to.
KEPT_SLOTS = 4
IN_USE = "in-use"  # present while a node runs on the store (or after it crashed)
CRI_DIR = "io.containerd.grpc.v1.cri"  # the CRI plugin's per-sandbox/container directories
META_DB = Path("io.containerd.metadata.v1.bolt") / "meta.db"


class NodeStoreError(RuntimeError):
    pass


def _say(msg: str) -> None:
    print(f"[node-store] {msg}", file=sys.stderr, flush=True)


def store_dir(slot: int) -> Path | None:
    """The kept containerd root of `slot`, or None when that slot keeps nothing."""
    if os.environ.get("FOUNDRY_NODE_KEEP_IMAGES", "1") == "0" or slot >= KEPT_SLOTS:
        return None
    return cache_dir() / "node-images" / f"s{slot}"


def mark_in_use(store: Path) -> None:
    store.mkdir(parents=True, exist_ok=True)
    (store / IN_USE).write_text(json.dumps({"pid": os.getpid(), "since": time.time()}))


def in_use(store: Path) -> bool:
    return (store / IN_USE).exists()


def scrub(store: Path, work: Path) -> None:
    """Leave only images in `store` (containerd must not be running on it).
    Anything that goes wrong wipes the store instead: a cold import, never a
    stale container."""
    if (store / META_DB).exists():
        try:
            with _Containerd(store, work) as ctr:
                for ns in ctr("namespaces", "ls", "-q").split():
                    ids = ctr("-n", ns, "containers", "ls", "-q").split()
                    if ids:
                        ctr("-n", ns, "containers", "delete", *ids)
                    leases = ctr("-n", ns, "leases", "ls", "-q").split()
                    if leases:
                        ctr("-n", ns, "leases", "delete", *leases)
                    left = ctr("-n", ns, "containers", "ls", "-q").split()
                    if left:
                        raise NodeStoreError(f"containers {left} survive their deletion")
        except (NodeStoreError, OSError, subprocess.SubprocessError) as exc:
            _say(f"could not scrub {store} ({exc}); wiping it")
            wipe(store)
            return
    shutil.rmtree(store / CRI_DIR, ignore_errors=True)
    (store / IN_USE).unlink(missing_ok=True)


def stored_containers(store: Path, work: Path) -> list[str]:
    """Every container recorded in a store no containerd runs on ("ns/id")."""
    if not (store / META_DB).exists():
        return []
    with _Containerd(store, work) as ctr:
        return [f"{ns}/{cid}" for ns in ctr("namespaces", "ls", "-q").split()
                for cid in ctr("-n", ns, "containers", "ls", "-q").split()]


def wipe(store: Path) -> None:
    subprocess.run(["umount", "-R", "-l", str(store)], capture_output=True)  # nothing should be mounted; be sure
    shutil.rmtree(store, ignore_errors=True)


class _Containerd:
    """containerd on `store` with no CRI plugin and a private socket and state,
    for the time of a `with` block; calling it runs ctr against it."""

    def __init__(self, store: Path, work: Path) -> None:
        self.work = work / "store-admin"
        self.sock = self.work / "c.sock"
        self.store = store
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "_Containerd":
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        config = self.work / "config.toml"
        q = json.dumps
        config.write_text("\n".join([
            "version = 2",
            f"root = {q(str(self.store))}",
            f"state = {q(str(self.work / 'state'))}",
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",'
            ' "io.containerd.internal.v1.tracing"]',
            "[grpc]", f"  address = {q(str(self.sock))}",
            "[ttrpc]", f"  address = {q(str(self.sock) + '.ttrpc')}",
            "[debug]", '  level = "warn"',
            "[metrics]", '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]', f"  path = {q(str(self.work / 'opt'))}",
        ]) + "\n")
        log = open(self.work / "containerd.log", "ab")
        try:
            self.proc = subprocess.Popen(["/usr/bin/containerd", "--config", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while not (self.sock.is_socket() and self._ok()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.work / "containerd.log").read_text(errors="replace")[-2000:]
                self.__exit__()
                raise NodeStoreError(f"containerd on {self.store} did not start:\n{tail}")
            time.sleep(0.1)
        return self

    def _ok(self) -> bool:
        return subprocess.run(["ctr", "--address", str(self.sock), "version"], capture_output=True,
                              timeout=15).returncode == 0

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(["ctr", "--address", str(self.sock), *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise NodeStoreError(f"ctr {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        shutil.rmtree(self.work, ignore_errors=True)
