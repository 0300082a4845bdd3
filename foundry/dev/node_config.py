"""What a real single-node cluster looks like on paper: its addresses and the
configuration files of its components. Pure functions, no I/O; node.py writes
and runs them.

Addressing. Each cluster takes a *slot* (0-63) and lives in a network
namespace of its own, so several clusters (one per test session of several
developers) can run on one machine without sharing iptables chains, bridges or
ports. With the default blocks, slot N uses:

    transit  10.216.N.0/30   host side .1 (``node_ip``), node side .2 (the Node's InternalIP)
    pods     10.217.N.0/24   the CNI bridge's gateway is .1
    services 10.218.N.0/24   ``kubernetes`` is .1

The host reaches pods and ClusterIPs through routes over the transit veth;
pods reach the host only at ``node_ip`` (the node namespace has no default
route, so nothing a pod sends can leave the machine). The blocks are
configurable (FOUNDRY_NODE_TRANSIT_NET, FOUNDRY_NODE_POD_NET,
FOUNDRY_NODE_SERVICE_NET, each a /16) for hosts where 10.216-218 are taken.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

MAX_SLOTS = 64
DEFAULT_BLOCKS = {"transit": "10.216.0.0/16", "pods": "10.217.0.0/16", "services": "10.218.0.0/16"}
ENV_BLOCKS = {"transit": "FOUNDRY_NODE_TRANSIT_NET", "pods": "FOUNDRY_NODE_POD_NET", "services": "FOUNDRY_NODE_SERVICE_NET"}
CLUSTER_DOMAIN = "cluster.local"
APISERVER_PORT = 6443
PAUSE_IMAGE = "foundry.local/pause:1"


def blocks_from_env(env: dict[str, str] | None = None) -> dict[str, ipaddress.IPv4Network]:
    env = dict(os.environ if env is None else env)
    out = {}
    for role, default in DEFAULT_BLOCKS.items():
        raw = env.get(ENV_BLOCKS[role], default)
        net = ipaddress.ip_network(raw, strict=True)
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 16:
            raise ValueError(f"{ENV_BLOCKS[role]}={raw!r}: need an IPv4 block of /16 or larger")
        out[role] = net
    return out


@dataclass(frozen=True)
class NodeAddressing:
    """The addresses and names of the cluster in one slot."""

    slot: int
    transit: ipaddress.IPv4Network
    pods: ipaddress.IPv4Network
    services: ipaddress.IPv4Network

    @classmethod
    def for_slot(cls, slot: int, blocks: dict[str, ipaddress.IPv4Network] | None = None) -> "NodeAddressing":
        if not 0 <= slot < MAX_SLOTS:
            raise ValueError(f"slot {slot} out of range 0..{MAX_SLOTS - 1}")
        b = blocks or blocks_from_env()

        def sub(role: str, prefix: int) -> ipaddress.IPv4Network:
            # The slot picks the third octet's /24; the transit uses its first /30.
            base = int(b[role].network_address) + slot * 256
            return ipaddress.ip_network(f"{ipaddress.ip_address(base)}/{prefix}")

        return cls(slot, sub("transit", 30), sub("pods", 24), sub("services", 24))

    # names (the node's own namespace keeps them apart; the host sees only the
    # netns and the host end of the transit veth)
    @property
    def netns(self) -> str:
        return f"foundry-node-{self.slot}"

    @property
    def node_name(self) -> str:
        return f"foundry-node-{self.slot}"

    @property
    def cgroup(self) -> str:
        return f"/foundry-node-{self.slot}"

    @property
    def host_veth(self) -> str:
        return f"fnode{self.slot}"

    @property
    def node_veth(self) -> str:
        return f"fnode{self.slot}n"

    @property
    def bridge(self) -> str:
        return f"fnbr{self.slot}"

    @property
    def cni_network(self) -> str:
        return f"foundry-node-{self.slot}"

    # addresses
    @property
    def host_ip(self) -> str:
        """Where pods reach servers running on the host (``NodeCluster.node_ip``)."""
        return str(self.transit.network_address + 1)

    @property
    def internal_ip(self) -> str:
        """The Node's InternalIP, inside the node namespace: apiserver, kubelet, DNS."""
        return str(self.transit.network_address + 2)

    @property
    def pod_gateway(self) -> str:
        return str(self.pods.network_address + 1)

    @property
    def kubernetes_service_ip(self) -> str:
        return str(self.services.network_address + 1)

    @property
    def dns_ip(self) -> str:
        # CoreDNS runs as a node process on the InternalIP (pods route there
        # through their gateway); no Service or kube-proxy rule in between.
        return self.internal_ip

    def owns_ip(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in self.pods


def overlapping(addr: NodeAddressing, routes: list[str]) -> list[str]:
    """Routes (CIDR strings, "default" ignored) on the host that overlap this slot's networks."""
    ours = (addr.transit, addr.pods, addr.services)
    clash = []
    for r in routes:
        if r == "default":
            continue
        try:
            net = ipaddress.ip_network(r if "/" in r else f"{r}/32", strict=False)
        except ValueError:
            continue
        if any(net.overlaps(o) for o in ours):
            clash.append(r)
    return clash


# ---- component configuration -------------------------------------------------
@dataclass(frozen=True)
class NodePaths:
    root: Path
    # Unix sockets need a short path (108 bytes), whatever the state root is:
    # containerd's socket and the kubelet's root dir (it binds sockets under
    # it) live in a short per-slot directory on disk instead.
    short: Path
    # containerd's root (images, content, snapshots) when it outlives the run
    # (node_store.py); None: inside the state directory, gone with it.
    image_store: Path | None = None

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def containerd_root(self) -> Path:
        return self.image_store or self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_sock(self) -> Path:
        return self.short / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubelet_root(self) -> Path:
        return self.short / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.csv"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.yaml"


def containerd_config(paths: NodePaths, sandbox_image: str = PAUSE_IMAGE) -> str:
    # TOML written by hand: every value is a path or a plain word, quoted with json.dumps.
    q = json.dumps
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f"root = {q(str(paths.containerd_root))}",
            f"state = {q(str(paths.containerd_state))}",
            # Snapshotters this machine cannot use only log errors at start.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
            ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
            ' "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
            "",
            "[grpc]",
            f"  address = {q(str(paths.containerd_sock))}",
            "[ttrpc]",
            f"  address = {q(str(paths.containerd_sock) + '.ttrpc')}",
            "[debug]",
            '  level = "warn"',
            "[metrics]",
            '  address = ""',
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {q(str(paths.root / 'containerd' / 'opt'))}",
            "",
            f"[{cri}]",
            f"  sandbox_image = {q(sandbox_image)}",
            # The VM's bounding set lacks CAP_SYS_RESOURCE: without this, runc
            # cannot apply the kubelet's negative oom_score_adj and every pod fails.
            "  restrict_oom_score_adj = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_selinux = false",
            "  disable_apparmor = true",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            '  BinaryName = "/usr/sbin/runc"',
            f"  Root = {q(str(paths.runc_root))}",
            f"[{cri}.cni]",
            '  bin_dir = "/usr/lib/cni"',
            f"  conf_dir = {q(str(paths.cni_conf_dir))}",
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_conflist(addr: NodeAddressing, paths: NodePaths) -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": addr.cni_network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": addr.bridge,
                "isGateway": True,
                "ipMasq": False,  # nothing to masquerade for: the node namespace routes only to the host
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(addr.pods), "gateway": addr.pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            # Accepts pod traffic in FORWARD whatever policy another tool set.
            {"type": "firewall", "backend": "iptables"},
        ],
    }


def kubelet_config(addr: NodeAddressing, paths: NodePaths, pki: dict[str, Path]) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        # Its own cgroup root: two kubelets on one host would otherwise each
        # remove the other's pod cgroups as orphans.
        "cgroupRoot": addr.cgroup,
        "failCgroupV1": False,  # this VM is cgroup v1; 1.35 refuses it otherwise
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_sock}",
        "address": addr.internal_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki["kubelet_serving_cert"]),
        "tlsPrivateKeyFile": str(pki["kubelet_serving_key"]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki["ca"])},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [addr.dns_ip],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",  # pods get only the cluster DNS; the host's resolvers are off-machine
        # A small test VM: evict only when really short, never collect our
        # imported images (they cannot be pulled back).
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.kubelet_root / "volume-plugins"),
        "serializeImagePulls": False,
        "registerNode": True,
        "rotateCertificates": False,
        "nodeStatusUpdateFrequency": "4s",
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(addr: NodeAddressing, kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": str(addr.pods),
        "hostnameOverride": addr.node_name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zero means "leave the kernel's conntrack settings alone": some are
        # global and read-only from a network namespace.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
    }


def kubeconfig(server: str, ca: Path, *, cert: Path | None = None, key: Path | None = None, token: str | None = None, user: str = "user") -> dict:
    creds: dict = {"token": token} if token else {"client-certificate": str(cert), "client-key": str(key)}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "foundry-node", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "foundry-node", "context": {"cluster": "foundry-node", "user": user}}],
        "current-context": "foundry-node",
    }


def corefile(addr: NodeAddressing, kubeconfig_path: Path) -> str:
    # Only the cluster domain and reverse zones: there is no upstream to
    # forward to (nothing may leave the machine), so other names fail fast.
    return f"""\
.:53 {{
    bind {addr.dns_ip}
    errors
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {kubeconfig_path}
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""


def dump_yaml(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False)
