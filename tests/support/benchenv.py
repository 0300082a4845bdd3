"""The servers a benchmark command runs against: the ones it was given
(--kubeconfig, --database-url), else throwaway local ones stopped on exit."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path


def kubeconfig_or_local_plane(kubeconfig: str | None, stack: ExitStack, workdir: Path) -> str:
    """`kubeconfig`, or a local control plane started under `workdir` (stopped with `stack`)."""
    if kubeconfig:
        return kubeconfig
    from foundry.dev.binaries import control_plane_bin_dir
    from foundry.dev.controlplane import ControlPlane

    print("starting a local control plane...", file=sys.stderr)
    plane = ControlPlane(bin_dir=control_plane_bin_dir(build=True), workdir=workdir)
    plane.start()
    stack.callback(plane.stop)
    return str(plane.kubeconfig)


def database_url_or_local_postgres(database_url: str | None, stack: ExitStack) -> str:
    """`database_url`, or a fresh database on a throwaway PostgreSQL (stopped with `stack`)."""
    if database_url:
        return database_url
    from foundry.dev.postgres import PostgresServer, create_database

    print("starting a throwaway PostgreSQL...", file=sys.stderr)
    server = PostgresServer.start()
    stack.callback(server.stop)
    return create_database(server.url)
