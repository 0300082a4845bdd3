"""`foundry dev cluster --node`: a real single-node cluster in the foreground."""

from __future__ import annotations

import signal
import threading

import click

from foundry.paths import state_dir


def run_node_cluster() -> None:
    from foundry.dev.binaries import BinariesUnavailable
    from foundry.dev.node import NodeCluster, NodeClusterError, coredns_binary, node_bin_dir
    from foundry.dev.node_host import NodeHostError

    try:
        cluster = NodeCluster(bin_dir=node_bin_dir(build=True), state_root=state_dir() / "dev-node", coredns=coredns_binary(build=True))
        click.echo("starting containerd, etcd, kube-apiserver, controllers, kubelet, kube-proxy and CoreDNS ...", err=True)
        cluster.start()
    except (BinariesUnavailable, NodeClusterError, NodeHostError) as exc:
        raise click.ClickException(str(exc))
    try:
        click.echo(f"# node {cluster.node_name} Ready in {cluster.timings['node_ready_s']}s; API at {cluster.server}", err=True)
        click.echo(f"# pods reach this host at {cluster.node_ip} (bind servers to 0.0.0.0 or that address)", err=True)
        click.echo(f"# logs in {cluster.paths.logs}; images: foundry.local/pause:1, foundry.local/busybox:1", err=True)
        click.echo(f"export KUBECONFIG={cluster.kubeconfig}")
        click.echo("# press Ctrl-C to stop (pods, processes, network and mounts are removed)", err=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
    finally:
        click.echo("stopping the node ...", err=True)
        cluster.stop()
