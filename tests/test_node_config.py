"""The real node's addressing and component configuration (pure; no root needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from foundry.dev import node_config as cfg
from foundry.dev.node_images import ImageError, normalize_ref


def test_each_slot_gets_disjoint_networks_and_names():
    seen_nets, seen_names = [], set()
    for slot in range(cfg.MAX_SLOTS):
        a = cfg.NodeAddressing.for_slot(slot, cfg.blocks_from_env({}))
        for net in (a.transit, a.pods, a.services):
            assert not any(net.overlaps(other) for other in seen_nets), (slot, net)
            seen_nets.append(net)
        names = (a.netns, a.host_veth, a.node_veth, a.bridge, a.cgroup)
        assert not seen_names & set(names)
        seen_names |= set(names)
        assert all(len(n) <= 15 for n in (a.host_veth, a.node_veth, a.bridge))  # IFNAMSIZ
        assert ipaddress.ip_address(a.host_ip) in a.transit and ipaddress.ip_address(a.internal_ip) in a.transit
        assert a.host_ip != a.internal_ip
        assert a.kubernetes_service_ip == str(a.services.network_address + 1)


def test_slot_3_with_default_blocks():
    a = cfg.NodeAddressing.for_slot(3, cfg.blocks_from_env({}))
    assert (str(a.transit), str(a.pods), str(a.services)) == ("10.216.3.0/30", "10.217.3.0/24", "10.218.3.0/24")
    assert (a.host_ip, a.internal_ip, a.pod_gateway) == ("10.216.3.1", "10.216.3.2", "10.217.3.1")


def test_blocks_are_configurable_and_checked():
    blocks = cfg.blocks_from_env({"FOUNDRY_NODE_POD_NET": "172.30.0.0/16"})
    assert str(cfg.NodeAddressing.for_slot(1, blocks).pods) == "172.30.1.0/24"
    with pytest.raises(ValueError, match="FOUNDRY_NODE_SERVICE_NET"):
        cfg.blocks_from_env({"FOUNDRY_NODE_SERVICE_NET": "10.0.0.0/24"})
    with pytest.raises(ValueError, match="slot 64"):
        cfg.NodeAddressing.for_slot(64, blocks)


def test_overlapping_host_routes_are_named():
    a = cfg.NodeAddressing.for_slot(0, cfg.blocks_from_env({}))
    assert cfg.overlapping(a, ["default", "192.0.2.0/24", "10.0.0.0/8", "10.217.0.5", "10.218.1.0/24"]) == ["10.0.0.0/8", "10.217.0.5"]


def test_cni_and_kubelet_configuration_keep_the_node_to_itself(tmp_path):
    a = cfg.NodeAddressing.for_slot(2, cfg.blocks_from_env({}))
    paths = cfg.NodePaths(tmp_path / "state", Path("/var/lib/foundry-node/s2"))
    bridge = cfg.cni_conflist(a, paths)["plugins"][0]
    assert bridge["bridge"] == a.bridge and bridge["ipam"]["ranges"] == [[{"subnet": "10.217.2.0/24", "gateway": "10.217.2.1"}]]
    assert bridge["ipam"]["dataDir"] == str(paths.ipam_dir)  # IP leases live (and die) with the state dir
    k = cfg.kubelet_config(a, paths, {"ca": Path("ca"), "kubelet_serving_cert": Path("c"), "kubelet_serving_key": Path("k")})
    assert k["cgroupRoot"] == "/foundry-node-2" and k["clusterDNS"] == [a.internal_ip]
    assert k["failCgroupV1"] is False and k["imageGCHighThresholdPercent"] == 100
    assert k["authentication"]["anonymous"] == {"enabled": False} and k["authorization"] == {"mode": "Webhook"}
    assert len(str(paths.kubelet_root / "pod-resources" / "0123456789")) < 100  # unix socket path limit
    toml = cfg.containerd_config(paths)
    assert "restrict_oom_score_adj = true" in toml and f'conf_dir = "{paths.cni_conf_dir}"' in toml
    assert "forward" not in cfg.corefile(a, Path("kc"))  # no upstream: nothing leaves the machine


@pytest.mark.parametrize(
    "ref, full",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("postgres:16", "docker.io/library/postgres:16"),
        ("bitnami/postgresql:16", "docker.io/bitnami/postgresql:16"),
        ("ghcr.io/foundry-dev/foundry:0.1.0", "ghcr.io/foundry-dev/foundry:0.1.0"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    ],
)
def test_image_refs_are_normalised_as_the_kubelet_does(ref, full):
    assert normalize_ref(ref) == full


def test_digest_refs_are_refused():
    with pytest.raises(ImageError, match="by tag"):
        normalize_ref("busybox@sha256:" + "0" * 64)
