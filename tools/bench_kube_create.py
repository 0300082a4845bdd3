#!/usr/bin/env python3
"""Raw FoundryRun create throughput through the Python Kubernetes client.

This is the physical-limit baseline for the bridge: every intake ends in one
create (or a 409 and a read) of a FoundryRun, so the bridge can never turn
webhooks into runs faster than this. Each call goes through
foundry.kube.runs.create_or_attach, the same code the bridge uses.

    .venv/bin/python tools/bench_kube_create.py                 # throwaway local control plane
    .venv/bin/python tools/bench_kube_create.py --kubeconfig ~/.kube/config --count 2000

Prints objects/s and per-call latency for each concurrency level, plus the
rate of attaches (all callers racing for the same names: 409 + read).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kubernetes import client, config

from foundry.kube.crds import install_crds
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest, create_or_attach


@contextmanager
def api_client_for(kubeconfig: str | None) -> Iterator[tuple[client.ApiClient, str]]:
    """An admin ApiClient: from the kubeconfig, or from a throwaway local control plane."""
    if kubeconfig:
        api = config.new_client_from_config(config_file=kubeconfig)
        try:
            yield api, kubeconfig
        finally:
            api.close()
        return
    from foundry.dev.binaries import control_plane_bin_dir
    from foundry.dev.controlplane import ControlPlane

    workdir = Path(tempfile.mkdtemp(prefix="foundry-bench-"))
    cp = ControlPlane(bin_dir=control_plane_bin_dir(build=True), workdir=workdir)
    print("starting a local control plane (etcd + kube-apiserver)...", file=sys.stderr)
    try:
        cp.start()
        api = cp.api_client()
        try:
            yield api, f"local control plane at {cp.server}"
        finally:
            api.close()
    finally:
        cp.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def manifests(count: int, tag: str) -> list[dict]:
    """`count` runs for distinct issues (ids are random so reruns never collide)."""
    return [
        build_run_manifest(
            TicketSnapshot("linear", str(uuid.uuid4()), f"BENCH-{i + 1}", title=f"bench {tag} {i}"),
            1,
            Trigger("manual", actor="bench"),
        )
        for i in range(count)
    ]


def run_level(api: client.ApiClient, namespace: str, items: list[dict], threads: int) -> tuple[float, list[float], int]:
    """Create every manifest with `threads` concurrent callers: (seconds, latencies, created)."""
    latencies: list[float] = []
    created = 0
    lock = threading.Lock()

    def one(manifest: dict) -> None:
        nonlocal created
        start = time.perf_counter()
        result = create_or_attach(api, namespace, manifest)
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)
            created += result.created

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(one, m) for m in items]:
            future.result()  # re-raises the first failure
    return time.perf_counter() - start, latencies, created


def report(label: str, seconds: float, latencies: list[float], created: int) -> None:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(
        f"{label:<28} {len(latencies):>6} calls  {len(latencies) / seconds:>8.1f} objects/s  "
        f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  created {created}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="cluster to measure (default $KUBECONFIG; without either, a throwaway local control plane)")
    parser.add_argument("--count", type=int, default=500, help="objects per concurrency level (default 500)")
    parser.add_argument("--threads", default="1,4,16", help="comma-separated concurrency levels (default 1,4,16)")
    args = parser.parse_args(argv)
    try:
        levels = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if args.count < 1 or not levels or min(levels) < 1:
        parser.error("--count and every --threads level must be at least 1")

    namespace = f"foundry-bench-{uuid.uuid4().hex[:8]}"
    with api_client_for(args.kubeconfig) as (api, where):
        # One pool connection per caller thread, so threads never queue for a socket.
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = max(levels)
        install_crds(api)
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        try:
            print(f"FoundryRun create throughput via the Python client against {where}")
            print(f"namespace {namespace}, {args.count} objects per level, {os.cpu_count()} CPUs")
            # The first create after a CRD is established waits for the server to
            # build the resource's handler; keep that out of the figures.
            start = time.perf_counter()
            create_or_attach(api, namespace, manifests(1, "warm-up")[0])
            print(f"warm-up create: {(time.perf_counter() - start) * 1000:.0f} ms\n")
            for threads in levels:
                items = manifests(args.count, f"t{threads}")
                seconds, latencies, created = run_level(api, namespace, items, threads)
                report(f"create, {threads} thread(s)", seconds, latencies, created)
            # Every caller racing for names that already exist: the cost of a duplicate webhook.
            threads = max(levels)
            seconds, latencies, created = run_level(api, namespace, items, threads)
            report(f"attach (409+read), {threads} thr", seconds, latencies, created)
        finally:
            client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(
                "foundry.dev", "v1alpha1", namespace, "foundryruns"
            )
            core.delete_namespace(namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
