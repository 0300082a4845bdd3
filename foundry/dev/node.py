"""A real single-node Kubernetes cluster for tests: pods really run.

containerd (CRI), etcd, kube-apiserver (Node,RBAC; NodeRestriction and
PodSecurity admission), kube-controller-manager, kube-scheduler, kubelet,
kube-proxy (iptables) and CoreDNS, all inside one network namespace per
cluster (see node_config.py for the addressing), with a state directory,
a cgroup tree and a CNI bridge of its own. Needs root.

    cluster = NodeCluster(bin_dir=node_bin_dir()).start()   # waits for Node Ready
    cluster.kubeconfig, cluster.server, cluster.api_client(), cluster.user_token("alice")
    cluster.import_image(tar, "ghcr.io/foundry-dev/foundry:0.1.0")
    cluster.node_ip      # pods reach servers on the host here (bind 0.0.0.0 or this address)
    cluster.stop()       # pods through the API, then processes, mounts, netns, veths, cgroups
                         # (images stay in the slot's store for the next run: node_store.py)

Several clusters can run at once on one machine (one slot each).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from foundry.dev import node_config as cfg
from foundry.dev import node_host as host
from foundry.dev import node_store
from foundry.dev.controlplane import ADMIN_USER, USERS
from foundry.dev.node_images import BUSYBOX_IMAGE, busybox_image, import_image, pause_image
from foundry.dev.node_pki import write_node_pki

SLOT_DIR = Path("/run/foundry-node")  # slot locks and records (tmpfs: gone at reboot)
SHORT_ROOT = Path("/var/lib/foundry-node")  # per-slot dirs whose paths must stay short
REQUIRED_TOOLS = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "ctr": "/usr/bin/ctr",
    "CNI plugins": "/usr/lib/cni/bridge",
    "nsenter": "/usr/bin/nsenter",
    "setpriv": "/usr/bin/setpriv",
    "iptables": "/usr/sbin/iptables",
}
NODE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")


class NodeClusterError(RuntimeError):
    pass


def _say(msg: str) -> None:
    print(f"[node] {msg}", file=sys.stderr, flush=True)


@dataclass
class NodeCluster:
    bin_dir: Path
    # Parent of the per-slot state directories (default: a fresh temp dir).
    state_root: Path | None = None
    slot: int | None = None  # None: the first free slot
    coredns: Path | None = None  # the CoreDNS binary; None: no cluster DNS
    images: list[tuple[Path, str]] = field(default_factory=list)  # (tarball, ref) imported at start
    admin_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    timings: dict[str, float] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _slot_lock: object = None
    _started: bool = False

    # ---- surface shared with ControlPlane ------------------------------------
    @property
    def server(self) -> str:
        return f"https://{self.addr.internal_ip}:{cfg.APISERVER_PORT}"

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def ca_file(self) -> Path:
        return self.pki["ca"]

    @property
    def node_ip(self) -> str:
        """The host's address as pods see it: a server on the host that binds
        0.0.0.0 (or exactly this address) is reachable from every pod here."""
        return self.addr.host_ip

    @property
    def internal_ip(self) -> str:
        """The Node's InternalIP (inside the node namespace): apiserver, kubelet, DNS."""
        return self.addr.internal_ip

    @property
    def node_name(self) -> str:
        return self.addr.node_name

    @property
    def containerd_address(self) -> Path:
        return self.paths.containerd_sock

    def user_token(self, name: str) -> str:
        if name not in USERS:
            raise KeyError(f"no static user {name!r}; known: {', '.join(USERS)}")
        return f"{name}-token"

    def api_client(self, token: str | None = None):
        """A kubernetes ApiClient as the admin (default) or as the bearer of `token`."""
        from kubernetes import client

        conf = client.Configuration()
        conf.host = self.server
        conf.ssl_ca_cert = str(self.ca_file)
        conf.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(conf)

    def import_image(self, tar_path: Path | str, ref: str) -> str:
        """Load a docker-archive tarball into this node under `ref` (see node_images.import_image)."""
        return import_image(tar_path, ref, address=self.containerd_address)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.paths.logs / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ---- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "NodeCluster":
        host.require_root()
        self._check_tools()
        t0 = time.monotonic()
        self._claim_slot()
        try:
            self._start(timeout)
        except BaseException:
            _say(f"start failed; cleaning up (logs in {self.paths.logs})")
            self.stop()
            raise
        self.timings["node_ready_s"] = round(time.monotonic() - t0, 2)
        _say(f"node {self.node_name} Ready in {self.timings['node_ready_s']}s; API {self.server}, node_ip {self.node_ip}")
        return self

    def _check_tools(self) -> None:
        missing = [name for name, path in REQUIRED_TOOLS.items() if not os.access(path, os.X_OK)]
        if missing:
            raise NodeClusterError(f"missing {', '.join(missing)}: run `make node-runtime` (tools/node-runtime.sh)")
        absent = [b for b in NODE_BINARIES if not (self.bin_dir / b).exists()]
        if absent:
            raise NodeClusterError(f"{self.bin_dir} lacks {', '.join(absent)}: run `make binaries` (tools/controlplane.sh)")

    def _claim_slot(self) -> None:
        SLOT_DIR.mkdir(parents=True, exist_ok=True)
        candidates = [self.slot] if self.slot is not None else range(cfg.MAX_SLOTS)
        for slot in candidates:
            fh = open(SLOT_DIR / f"slot-{slot}.lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            self.slot, self._slot_lock = slot, fh
            break
        else:
            raise NodeClusterError(f"no free node slot among {list(candidates)} (each running cluster holds one)")
        self.addr = cfg.NodeAddressing.for_slot(self.slot)
        # Whatever a crashed run left in this slot goes first.
        stale = self._slot_record()
        if stale or host.netns_exists(self.addr.netns) or host.cgroups_left(self.addr) or (SHORT_ROOT / f"s{self.slot}").exists():
            _say(f"slot {self.slot}: cleaning up what an earlier run left")
            self._teardown(Path(stale["state_dir"]) if stale else None)
        root = self.state_root or Path(tempfile.mkdtemp(prefix="foundry-node-"))
        self.state_root = root
        self.paths = cfg.NodePaths(root / f"slot-{self.slot}", SHORT_ROOT / f"s{self.slot}",
                                   image_store=node_store.store_dir(self.slot))
        (SLOT_DIR / f"slot-{self.slot}.json").write_text(json.dumps({"state_dir": str(self.paths.root), "pid": os.getpid()}))

    def _slot_record(self) -> dict | None:
        path = SLOT_DIR / f"slot-{self.slot}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _start(self, timeout: float) -> None:
        clash = cfg.overlapping(self.addr, host.host_routes())
        if clash:
            raise NodeClusterError(
                f"the host already routes {clash}, which overlaps slot {self.slot} "
                f"({self.addr.transit}, {self.addr.pods}, {self.addr.services}); choose other blocks with "
                + ", ".join(cfg.ENV_BLOCKS.values())
            )
        p = self.paths
        if p.root.exists():
            host.umount_all(p.root)
            shutil.rmtree(p.root)
        host.umount_all(p.short)
        shutil.rmtree(p.short, ignore_errors=True)
        for d in (p.short, p.logs, p.cni_conf_dir, p.ipam_dir, p.kubelet_root, p.pod_logs, p.root / "kubeconfigs", p.root / "containerd"):
            d.mkdir(parents=True, exist_ok=True)
        if p.image_store is not None:
            # Images stay from earlier runs; whatever else a crashed one left goes.
            if node_store.in_use(p.image_store):
                host.umount_all(p.image_store)
                node_store.scrub(p.image_store, p.short)
            node_store.mark_in_use(p.image_store)
        self.pki = write_node_pki(p.pki, self.addr)
        self._write_configs()
        host.setup_network(self.addr)
        host.create_cgroups(self.addr)
        self._started = True

        self._spawn("containerd", ["/usr/bin/containerd", "--config", str(p.containerd_config)])
        self._wait(lambda: p.containerd_sock.is_socket() and self._ctr_ok(), "containerd", 30)
        # Images load while etcd and the API server start: only pods need them.
        imports = _Background(self._import_images)

        t = time.monotonic()
        self._spawn("etcd", self._etcd_args())
        self._wait(lambda: self._http_ok("http://127.0.0.1:2379/health", netns=True), "etcd", 30)
        self._spawn("kube-apiserver", self._apiserver_args())
        self._wait(self._apiserver_ready, "kube-apiserver", timeout)
        self.timings["apiserver_ready_s"] = round(time.monotonic() - t, 2)
        self._write_kubeconfig()
        self._spawn("kube-controller-manager", self._kcm_args())
        self._spawn("kube-scheduler", [str(self.bin_dir / "kube-scheduler"), f"--kubeconfig={p.component_kubeconfig('scheduler')}", "--leader-elect=false", "--bind-address=127.0.0.1", "--v=0"])
        self._spawn("kubelet", self._kubelet_args())
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={p.root / 'kube-proxy.yaml'}", "--v=0"])
        if self.coredns:
            self._spawn("coredns", [str(self.coredns), "-conf", str(p.root / "Corefile")])
        imports.result()
        t = time.monotonic()
        self._wait(self._node_ready, "Node Ready", timeout, log="kubelet")
        self.timings["kubelet_to_ready_s"] = round(time.monotonic() - t, 2)
        if self.coredns:
            self._wait(lambda: self._http_ok("http://127.0.0.1:8181/ready", netns=True), "CoreDNS", 30, log="coredns")

    def _import_images(self) -> None:
        t = time.monotonic()
        for tar, ref in [(pause_image(), cfg.PAUSE_IMAGE), (busybox_image(), BUSYBOX_IMAGE), *self.images]:
            self.import_image(tar, ref)
        self.timings["image_import_s"] = round(time.monotonic() - t, 2)

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each component and, summed, of the shims and
        containers (everything else in the node's cgroups), in MiB."""
        out: dict[str, float] = {}
        named = {p.pid: n for n, p in self._procs.items() if p.poll() is None}
        for pid in host.cgroup_pids(self.addr):
            key = named.get(pid, "shims+containers")
            out[key] = round(out.get(key, 0.0) + _rss_kib(pid) / 1024, 1)
        out["total"] = round(sum(out.values()), 1)
        return out

    # ---- configuration -----------------------------------------------------------
    def _write_configs(self) -> None:
        p, a, k = self.paths, self.addr, self.pki
        p.containerd_config.write_text(cfg.containerd_config(p))
        (p.cni_conf_dir / "10-foundry.conflist").write_text(json.dumps(cfg.cni_conflist(a, p), indent=2))
        local = f"https://{a.internal_ip}:{cfg.APISERVER_PORT}"
        for name, role in (("controller-manager", "controller_manager"), ("scheduler", "scheduler"), ("kube-proxy", "kube_proxy"), ("kubelet", "kubelet"), ("coredns", "coredns")):
            doc = cfg.kubeconfig(local, k["ca"], cert=k[f"{role}_cert"], key=k[f"{role}_key"], user=name)
            p.component_kubeconfig(name).write_text(cfg.dump_yaml(doc))
        (p.root / "kubelet.yaml").write_text(cfg.dump_yaml(cfg.kubelet_config(a, p, k)))
        (p.root / "kube-proxy.yaml").write_text(cfg.dump_yaml(cfg.kube_proxy_config(a, p.component_kubeconfig("kube-proxy"))))
        (p.root / "Corefile").write_text(cfg.corefile(a, p.component_kubeconfig("coredns")))
        tokens = [f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"'] + [f"{u}-token,{u},{u}" for u in USERS]
        p.tokens.write_text("\n".join(tokens) + "\n")
        p.tokens.chmod(0o600)

    def _etcd_args(self) -> list[str]:
        return [
            str(self.bin_dir / "etcd"), "--name=default", f"--data-dir={self.paths.etcd_data}",
            "--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=default=http://127.0.0.1:2380", "--unsafe-no-fsync=true",
            "--listen-metrics-urls=http://127.0.0.1:2381", "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        k, a = self.pki, self.addr
        return [
            str(self.bin_dir / "kube-apiserver"),
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0",  # inside the node namespace: its two addresses and loopback
            f"--advertise-address={a.internal_ip}",
            f"--secure-port={cfg.APISERVER_PORT}",
            f"--tls-cert-file={k['apiserver_cert']}",
            f"--tls-private-key-file={k['apiserver_key']}",
            f"--client-ca-file={k['ca']}",
            f"--token-auth-file={self.paths.tokens}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # PodSecurity is on by default
            f"--kubelet-client-certificate={k['apiserver_kubelet_client_cert']}",
            f"--kubelet-client-key={k['apiserver_kubelet_client_key']}",
            f"--kubelet-certificate-authority={k['ca']}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-key-file={k['sa_pub']}",
            f"--service-account-signing-key-file={k['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={a.services}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=0",
        ]

    def _kcm_args(self) -> list[str]:
        k, p = self.pki, self.paths
        kc = p.component_kubeconfig("controller-manager")
        return [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            f"--service-account-private-key-file={k['sa_key']}",
            f"--root-ca-file={k['ca']}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={k['ca']}",
            f"--cluster-signing-key-file={k['ca_key']}",
            f"--service-cluster-ip-range={self.addr.services}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--v=0",
        ]

    def _kubelet_args(self) -> list[str]:
        p = self.paths
        return [
            str(self.bin_dir / "kubelet"),
            f"--config={p.root / 'kubelet.yaml'}",
            f"--kubeconfig={p.component_kubeconfig('kubelet')}",
            f"--root-dir={p.kubelet_root}",
            f"--cert-dir={p.pki}",
            f"--hostname-override={self.addr.node_name}",
            f"--node-ip={self.addr.internal_ip}",
            "--v=1",
        ]

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "foundry-node", "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin_token}}] + [{"name": u, "user": {"token": f"{u}-token"}} for u in USERS],
            "contexts": [{"name": "foundry-node", "context": {"cluster": "foundry-node", "user": ADMIN_USER}}]
            + [{"name": u, "context": {"cluster": "foundry-node", "user": u}} for u in USERS],
            "current-context": "foundry-node",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    # ---- processes -------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        procs = [str(h / self.addr.cgroup.lstrip("/") / "system" / "cgroup.procs") for h in host.cgroup_hierarchies()]
        # A shell joins the node's cgroups, then setpriv arranges SIGTERM when
        # this process dies and nsenter enters the node's network namespace.
        script = (
            f"for f in {' '.join(shlex.quote(x) for x in procs)}; do echo $$ > \"$f\" 2>/dev/null; done; "
            f'exec setpriv --pdeathsig TERM nsenter --net={host.NETNS_DIR / self.addr.netns} -- "$@"'
        )
        log = open(self.paths.logs / f"{name}.log", "ab")
        try:
            self._procs[name] = subprocess.Popen(
                ["/bin/sh", "-c", script, name, *args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()

    def _wait(self, check, what: str, timeout: float, log: str | None = None) -> None:
        log = log or what
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise NodeClusterError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{self.log_tail(name)}")
            if check():
                return
            time.sleep(0.2)
        raise NodeClusterError(f"{what} not ready after {timeout:.0f}s:\n{self.log_tail(log)}")

    def _ctr_ok(self) -> bool:
        return subprocess.run(["ctr", "--address", str(self.paths.containerd_sock), "version"], capture_output=True, timeout=15).returncode == 0

    def _http_ok(self, url: str, netns: bool = False) -> bool:
        if netns:  # an address only the node namespace has (its loopback)
            proc = host.run(["curl", "-sf", "-m", "2", url], netns=self.addr.netns, check=False) if shutil.which("curl") else None
            if proc is not None:
                return proc.returncode == 0
            proc = host.run([sys.executable, "-c", f"import urllib.request as u; u.urlopen({url!r}, timeout=2)"], netns=self.addr.netns, check=False)
            return proc.returncode == 0
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki["ca"]))
        req = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _node_ready(self) -> bool:
        from kubernetes import client

        try:
            with self.api_client() as api:
                node = client.CoreV1Api(api).read_node(self.addr.node_name, _request_timeout=5)
        except Exception:  # not registered yet, or the API is settling
            return False
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    def __enter__(self) -> "NodeCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- teardown ----------------------------------------------------------------
    def stop(self) -> None:
        """Remove everything this cluster made, in an order that leaks nothing:
        pods through the API (so the kubelet releases their netns, veths and
        IP leases), then processes, mounts, namespaces, cgroups, files."""
        if self.slot is None or not hasattr(self, "addr"):
            return
        t0 = time.monotonic()
        try:
            if self._started:
                self._delete_pods()
            self._teardown(self.paths.root if hasattr(self, "paths") else None)
        finally:
            (SLOT_DIR / f"slot-{self.slot}.json").unlink(missing_ok=True)
            if self._slot_lock is not None:
                self._slot_lock.close()
                self._slot_lock = None
            self._started = False
        self.timings["teardown_s"] = round(time.monotonic() - t0, 2)

    def _delete_pods(self) -> None:
        from kubernetes import client

        if not self._running("kube-apiserver") or not self._running("kubelet"):
            return
        # Controllers first, or they would replace the pods we delete.
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._terminate(name)
        try:
            with self.api_client() as api:
                core = client.CoreV1Api(api)
                namespaces = {p.metadata.namespace for p in core.list_pod_for_all_namespaces(_request_timeout=10).items}
                for ns in sorted(namespaces):
                    core.delete_collection_namespaced_pod(ns, grace_period_seconds=0, _request_timeout=10)
        except Exception as exc:  # the API is gone: the teardown below still cleans up
            _say(f"could not delete pods through the API ({exc}); cleaning up behind the kubelet")
            return
        # The kubelet stops each sandbox, which runs CNI DEL: lease files go.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._ip_leases():
            time.sleep(0.2)

    def _ip_leases(self) -> list[Path]:
        net_dir = self.paths.ipam_dir / self.addr.cni_network
        if not net_dir.exists():
            return []
        return [f for f in net_dir.iterdir() if f.name[:1].isdigit()]

    def _running(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _terminate(self, name: str, timeout: float = 10) -> None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)

    def _pod_netns_from_containerd(self) -> list[str]:
        """The netns paths containerd recorded for its sandboxes (ours only)."""
        sock = self.paths.containerd_sock if hasattr(self, "paths") else None
        if not sock or not sock.is_socket():
            return []
        base = ["ctr", "--address", str(sock), "--namespace", "k8s.io"]
        ids = subprocess.run(base + ["containers", "ls", "-q"], capture_output=True, text=True, timeout=15).stdout.split()
        found = []
        for cid in ids:
            info = subprocess.run(base + ["containers", "info", cid], capture_output=True, text=True, timeout=15)
            try:
                spec = json.loads(info.stdout).get("Spec") or {}
            except ValueError:
                continue
            for ns in (spec.get("linux") or {}).get("namespaces") or []:
                path = ns.get("path") or ""
                if ns.get("type") == "network" and path.startswith(str(host.NETNS_DIR) + "/cni-"):
                    found.append(Path(path).name)
        return found

    def _teardown(self, state_dir: Path | None) -> None:
        a = self.addr
        pod_netns = []
        try:
            pod_netns = self._pod_netns_from_containerd()
        except (OSError, subprocess.SubprocessError):
            pass
        for name in reversed(list(self._procs)):
            self._terminate(name)
        # Shims and containers live in the node's cgroups; anything else still
        # inside the node namespace or naming its state directory goes too.
        host.kill_cgroup(a)
        host.kill_pids(host.processes_in_netns(a.netns))
        short = SHORT_ROOT / f"s{a.slot}"
        store = node_store.store_dir(a.slot)
        for d in (state_dir, short, store):
            if d is not None:
                host.kill_pids(host.processes_mentioning(str(d) + "/"))
                host.umount_all(d)
        host.teardown_network(a, pod_netns)
        host.remove_cgroups(a)
        if store is not None and node_store.in_use(store):
            node_store.scrub(store, short)  # only images stay for the next run
        shutil.rmtree(short, ignore_errors=True)
        if state_dir is not None and state_dir.exists():
            # Keep the logs for a post-mortem; the rest (etcd, an unkept image store) is large.
            for child in state_dir.iterdir():
                if child.name != "logs":
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


class _Background:
    """Run a function in a thread; result() re-raises what it raised."""

    def __init__(self, fn) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the caller in result()
            self._error = exc

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def node_bin_dir(build: bool = True) -> Path:
    """The directory with the node binaries (tools/controlplane.sh builds or reuses them)."""
    from foundry.dev.binaries import control_plane_bin_dir

    return control_plane_bin_dir(build=build)


def coredns_binary(build: bool = True) -> Path:
    """CoreDNS for the cluster DNS (tools/coredns.sh builds or reuses it)."""
    from foundry.paths import REPO_ROOT

    script = REPO_ROOT / "tools" / "coredns.sh"
    proc = subprocess.run(["bash", str(script)] + ([] if build else ["--check"]), stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise NodeClusterError(f"{script} could not provide CoreDNS (exit {proc.returncode}); see the messages above")
    return Path(lines[-1])
