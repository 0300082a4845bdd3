"""Host plumbing for a real node: its network namespace, transit veth and
routes, its cgroup tree, and the teardown of each (processes, mounts, pod
network namespaces). Everything here is keyed by the slot's NodeAddressing and
state directory, so a later run can clean up after one that crashed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from foundry.dev.node_config import NodeAddressing

NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeHostError(RuntimeError):
    pass


def run(args: list[str], *, check: bool = True, netns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    if netns:
        args = ["ip", "netns", "exec", netns] + args
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeHostError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def require_root() -> None:
    if os.geteuid() != 0:
        raise NodeHostError(
            "the real-node test bed needs root: it creates a network namespace, a bridge, veths, iptables rules, "
            "cgroups and mounts, and runs containerd and the kubelet. Run the node tests (or `foundry dev cluster --node`) as root."
        )


# ---- network -----------------------------------------------------------------
def host_routes() -> list[str]:
    out = run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout
    return [r.get("dst", "") for r in json.loads(out or "[]")]


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def setup_network(addr: NodeAddressing) -> None:
    """The node namespace, joined to the host by a veth pair: host end
    ``host_ip``, node end ``internal_ip``. The host routes the pod and service
    blocks into the node; the node routes nothing beyond the host."""
    ns = addr.netns
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", addr.host_veth, "type", "veth", "peer", "name", addr.node_veth])
    run(["ip", "link", "set", addr.node_veth, "netns", ns])
    plen = addr.transit.prefixlen
    run(["ip", "addr", "add", f"{addr.host_ip}/{plen}", "dev", addr.host_veth])
    run(["ip", "link", "set", addr.host_veth, "up"])
    run(["ip", "addr", "add", f"{addr.internal_ip}/{plen}", "dev", addr.node_veth], netns=ns)
    run(["ip", "link", "set", addr.node_veth, "up"], netns=ns)
    run(["ip", "link", "set", "lo", "up"], netns=ns)
    for net in (addr.pods, addr.services):
        run(["ip", "route", "replace", str(net), "via", addr.internal_ip, "dev", addr.host_veth])
    # Forwarding inside the node namespace only (pod <-> node <-> host); the
    # host's own ip_forward is left as it is.
    for key, value in (("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1"), ("net.ipv6.conf.all.disable_ipv6", "1")):
        run(["sysctl", "-q", "-w", f"{key}={value}"], netns=ns, check=key != "net.ipv6.conf.all.disable_ipv6")


def pod_netns_of(addr: NodeAddressing) -> list[str]:
    """The ``cni-*`` namespaces holding an address from this node's pod block."""
    found = []
    if not NETNS_DIR.exists():
        return found
    for entry in NETNS_DIR.iterdir():
        if not entry.name.startswith("cni-"):
            continue
        proc = run(["ip", "-n", entry.name, "-j", "-4", "addr"], check=False, timeout=10)
        try:
            links = json.loads(proc.stdout or "[]")
        except ValueError:
            continue
        for link in links:
            if any(addr.owns_ip(a.get("local", "0.0.0.0")) for a in link.get("addr_info", [])):
                found.append(entry.name)
                break
    return found


def delete_netns(name: str) -> None:
    path = NETNS_DIR / name
    if not path.exists():
        return
    if run(["ip", "netns", "delete", name], check=False).returncode != 0:
        # A namespace file that ip(8) cannot remove: unmount it ourselves.
        _umount(path)
        path.unlink(missing_ok=True)


def teardown_network(addr: NodeAddressing, extra_pod_netns: list[str] = ()) -> None:
    for ns in sorted(set(pod_netns_of(addr)) | set(extra_pod_netns)):
        delete_netns(ns)
    # Deleting the node namespace destroys everything inside it: the CNI
    # bridge, the pods' host-side veths, the node end of the transit pair
    # (and with it the host end and its routes) and all its iptables rules.
    delete_netns(addr.netns)
    if run(["ip", "link", "show", addr.host_veth], check=False).returncode == 0:
        run(["ip", "link", "delete", addr.host_veth], check=False)


# ---- cgroups -------------------------------------------------------------------
def cgroup_hierarchies() -> list[Path]:
    """Each mounted cgroup hierarchy (v1 controllers, named ones and the v2 mount)."""
    dirs = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0] if right else ""
            if fstype in ("cgroup", "cgroup2"):
                mnt = Path(left.split()[4])
                if mnt.is_relative_to(CGROUP_ROOT):
                    dirs.append(mnt)
    return dirs


def create_cgroups(addr: NodeAddressing, children: tuple[str, ...] = ("system",)) -> None:
    """The node's cgroup root in every hierarchy (the kubelet requires it to
    exist) and a `system` child for the node's own processes."""
    for h in cgroup_hierarchies():
        for rel in ("",) + children:
            d = h / addr.cgroup.lstrip("/") / rel
            d.mkdir(parents=True, exist_ok=True)
            # A v1 cpuset cgroup takes no task until it has cpus and mems.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                f = d / knob
                if f.exists() and not f.read_text().strip():
                    f.write_text((d.parent / knob).read_text())


def join_cgroup(addr: NodeAddressing, child: str = "system") -> None:
    """Move the calling process into the node's cgroup (a preexec hook), so
    containerd's shims and everything they start can be found and killed."""
    for h in cgroup_hierarchies():
        procs = h / addr.cgroup.lstrip("/") / child / "cgroup.procs"
        try:
            procs.write_text("0")
        except OSError:
            pass  # a hierarchy that refuses (e.g. the v2 mount in hybrid mode) is not needed


def cgroup_pids(addr: NodeAddressing) -> set[int]:
    pids: set[int] = set()
    for h in cgroup_hierarchies():
        top = h / addr.cgroup.lstrip("/")
        if not top.exists():
            continue
        for dirpath, _, filenames in os.walk(top):
            if "cgroup.procs" in filenames:
                try:
                    pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
                except OSError:
                    pass
    pids.discard(os.getpid())
    return pids


def kill_cgroup(addr: NodeAddressing, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(addr)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise NodeHostError(f"processes in {addr.cgroup} survive SIGKILL: {sorted(pids)}")
        time.sleep(0.1)


def remove_cgroups(addr: NodeAddressing) -> None:
    for h in cgroup_hierarchies():
        top = h / addr.cgroup.lstrip("/")
        if not top.exists():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
            for attempt in range(20):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)  # a killed task leaves its cgroup a moment later


def cgroups_left(addr: NodeAddressing) -> list[Path]:
    return [h / addr.cgroup.lstrip("/") for h in cgroup_hierarchies() if (h / addr.cgroup.lstrip("/")).exists()]


# ---- processes and mounts --------------------------------------------------------
def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (e.g. the state directory)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def processes_in_netns(name: str) -> list[int]:
    path = NETNS_DIR / name
    try:
        target = os.stat(path).st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == target:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mounts_under(root: Path) -> list[str]:
    root_s = str(root).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == root_s or mnt.startswith(root_s + "/"):
                found.append(mnt)
    return found


def _umount(path: Path | str) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def umount_all(root: Path) -> None:
    # Deepest first; repeat because a bind mount may be stacked several times.
    for _ in range(10):
        mounts = mounts_under(root)
        if not mounts:
            return
        for mnt in sorted(set(mounts), key=lambda m: -len(m)):
            _umount(mnt)
    left = mounts_under(root)
    if left:
        raise NodeHostError(f"mounts under {root} survive umount: {left[:5]}")

