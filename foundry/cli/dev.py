"""`foundry dev ...`: local development helpers (control plane, demo stack)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from foundry.paths import state_dir


def _cluster_dir() -> Path:
    return state_dir() / "dev-cluster"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def running_cluster() -> dict | None:
    """The state of a detached dev cluster that is still running, if any."""
    state_file = _cluster_dir() / "state.json"
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    if all(_alive(pid) for pid in state.get("pids", {}).values()):
        return state
    return None


@click.group()
def dev() -> None:
    """Run Foundry's pieces locally for development and exploration (needs the `dev` extra)."""
    from foundry.cli.extras import missing_for

    missing = missing_for("dev")
    if missing:
        # One line, no traceback: the local stack is an extra, not part of the product install.
        raise click.ClickException(f"foundry dev needs the local stack: pip install 'foundry[dev]' "
                                   f"(missing: {', '.join(missing)})")


@dev.group(invoke_without_command=True)
@click.option("--detach", is_flag=True, help="Leave the control plane running in the background and return.")
@click.option("--node", "real_node", is_flag=True, help="A real single-node cluster where pods run (containerd, kubelet, ...; needs root).")
@click.pass_context
def cluster(ctx: click.Context, detach: bool, real_node: bool) -> None:
    """Start a local Kubernetes control plane (etcd + kube-apiserver, no kubelet).

    Prints the `export KUBECONFIG=...` line to use it. Runs until Ctrl-C unless
    --detach is given; stop a detached one with `foundry dev cluster stop`.
    The binaries come from tools/controlplane.sh (built once, then cached).
    """
    if ctx.invoked_subcommand is not None:
        return
    if real_node:
        if detach:
            raise click.UsageError("--node runs in the foreground (Ctrl-C stops it and cleans up); drop --detach")
        from foundry.cli.dev_node import run_node_cluster

        run_node_cluster()
        return
    from foundry.dev.binaries import BinariesUnavailable, control_plane_bin_dir
    from foundry.dev.controlplane import ControlPlane, ControlPlaneError

    existing = running_cluster()
    if existing:
        click.echo(f"# a dev cluster is already running at {existing['server']}")
        click.echo(f"export KUBECONFIG={existing['kubeconfig']}")
        return
    try:
        bin_dir = control_plane_bin_dir(build=True)
    except BinariesUnavailable as exc:
        raise click.ClickException(str(exc))
    workdir = _cluster_dir()
    cp = ControlPlane(bin_dir=bin_dir, workdir=workdir, detach=detach)
    click.echo("starting etcd and kube-apiserver ...", err=True)
    try:
        cp.start()
    except ControlPlaneError as exc:
        cp.stop()
        raise click.ClickException(f"the control plane did not start: {exc}")
    click.echo(f"# Kubernetes API at {cp.server} (logs in {workdir})", err=True)
    click.echo(f"export KUBECONFIG={cp.kubeconfig}")
    if detach:
        click.echo("# stop it with: foundry dev cluster stop", err=True)
        return
    click.echo("# press Ctrl-C to stop", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    click.echo("stopping the control plane ...", err=True)
    cp.stop()


@cluster.command("stop")
def cluster_stop() -> None:
    """Stop a dev cluster started with --detach."""
    from foundry.dev.controlplane import stop_detached

    if stop_detached(_cluster_dir()):
        click.echo("dev cluster stopped")
    else:
        click.echo("no dev cluster is running", err=True)
        sys.exit(1)


from foundry.cli.dev_stack import demo as _demo, down as _down, up as _up  # noqa: E402 - attached after `dev` exists

dev.add_command(_demo)
dev.add_command(_up)
dev.add_command(_down)
