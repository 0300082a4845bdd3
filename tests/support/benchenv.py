"""The servers a benchmark command runs against: the ones it was given
(--kubeconfig, --database-url), else throwaway local ones stopped on exit."""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class BenchServers:
    workdir: Path
    kubeconfig: str
    database_url: str
    engine: Any  # sqlalchemy Engine, schema created
    api: Any  # kubernetes ApiClient, Foundry's CRDs installed


def bench_servers(stack: ExitStack, *, prefix: str, kubeconfig: str | None, database_url: str | None,
                  pool_size: int | None = None) -> BenchServers:
    """What every benchmark starts from: a work directory (removed with `stack`), the servers
    (given, or local ones), the database schema and the CRDs. `pool_size` widens the API
    client's connection pool for a benchmark that sends that many requests at once."""
    from kubernetes import config

    from foundry.db.engine import create_schema, make_engine
    from foundry.kube.crds import install_crds

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, workdir, True)
    kubeconfig = kubeconfig_or_local_plane(kubeconfig, stack, workdir / "plane")
    database_url = database_url_or_local_postgres(database_url, stack)
    engine = make_engine(database_url)
    stack.callback(engine.dispose)
    create_schema(engine)
    api = config.new_client_from_config(config_file=kubeconfig)
    stack.callback(api.close)
    if pool_size is not None:
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = pool_size
    install_crds(api)
    return BenchServers(workdir, kubeconfig, database_url, engine, api)
