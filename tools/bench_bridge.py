#!/usr/bin/env python3
"""Bridge throughput and latency next to the raw FoundryRun create baseline, measured in one run.

    .venv/bin/python tools/bench_bridge.py                  # throwaway control plane + PostgreSQL
    .venv/bin/python tools/bench_bridge.py --count 1000 --markdown

Figures:
- raw: FoundryRun creates/s through the Python client at the same concurrency
  (tools/bench_kube_create.py's functions), before and after the bridge runs;
- bridge: distinct tickets/s and p50/p99 latency, signed Linear deliveries sent
  to one `foundry bridge` process at --concurrency, each one an intake;
- ratio: bridge tickets/s ÷ raw creates/s (target ≥ 0.5);
- storm: p99 latency of 64 concurrent deliveries of one ticket to two bridge
  processes (alternating), over --storms storms (target < 150 ms);
- bridge CPU: user+system CPU time of the bridge process per distinct ticket.

Both paths are warmed up before anything is measured. --threaded also runs the
bridges with FOUNDRY_BRIDGE_LEAN=0 (the threaded official-client/ORM path) in
the same run, so the two can be compared under the same conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import aiohttp
# tests.support (the harnesses) is importable from the repository root only.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client, config  # noqa: E402

from tests.support.bridge_kit import BridgeProcess, encode, linear_headers, linear_issue  # noqa: E402
from foundry.db.engine import create_schema, make_engine  # noqa: E402
from foundry.kube.crds import install_crds  # noqa: E402
from tests.support.benchenv import database_url_or_local_postgres, kubeconfig_or_local_plane  # noqa: E402

SECRET = "bench-secret"
TOOLS = Path(__file__).resolve().parent


def _raw_bench():
    spec = importlib.util.spec_from_file_location("bench_kube_create", TOOLS / "bench_kube_create.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _delivery(issue_id: str, key: str) -> tuple[bytes, dict[str, str]]:
    body = encode(linear_issue(issue_id, key, description="bench"))
    return body, linear_headers(body, SECRET, str(uuid.uuid4()))


async def _send(urls: list[str], sends: list[tuple[bytes, dict[str, str]]], concurrency: int):
    """(wall seconds, latencies, statuses) for POSTing every delivery with `concurrency` in flight."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int, body: bytes, headers: dict[str, str]) -> None:
            async with limit:
                started = time.perf_counter()
                async with session.post(f"{urls[i % len(urls)]}/webhooks/linear", data=body, headers=headers) as r:
                    answer = await r.json()
                latencies.append(time.perf_counter() - started)
                statuses.append(answer.get("status") or f"HTTP {r.status}")

        started = time.perf_counter()
        await asyncio.gather(*(one(i, b, h) for i, (b, h) in enumerate(sends)))
        return time.perf_counter() - started, latencies, statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="cluster to use (default: a throwaway local control plane)")
    parser.add_argument("--database-url", help="PostgreSQL to use (default: a throwaway server)")
    parser.add_argument("--count", type=int, default=500, help="distinct tickets (and raw creates) per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--storms", type=int, default=5, help="64-way storms to take the p99 over")
    parser.add_argument("--workers", type=int, help="FOUNDRY_BRIDGE_WORKERS for the bridges (default: theirs)")
    parser.add_argument("--markdown", action="store_true", help="also print a table for docs/benchmarks.md")
    parser.add_argument(
        "--threaded", action="store_true", help="also measure the threaded path (FOUNDRY_BRIDGE_LEAN=0) for comparison"
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.concurrency < 1 or args.storms < 1:
        parser.error("--count, --concurrency and --storms must be at least 1")
    raw = _raw_bench()

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="foundry-bench-bridge-"))
        stack.callback(shutil.rmtree, workdir, True)
        kubeconfig = kubeconfig_or_local_plane(args.kubeconfig, stack, workdir)
        database_url = database_url_or_local_postgres(args.database_url, stack)
        engine = make_engine(database_url)
        create_schema(engine)
        engine.dispose()

        api = config.new_client_from_config(config_file=kubeconfig)
        stack.callback(api.close)
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = args.concurrency
        install_crds(api)
        namespace = f"foundry-bench-{uuid.uuid4().hex[:8]}"
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        stack.callback(core.delete_namespace, namespace)
        raw.create_or_attach(api, namespace, raw.manifests(1, "warm-up")[0])

        env = {
            "KUBECONFIG": kubeconfig,
            "FOUNDRY_NAMESPACE": namespace,
            "FOUNDRY_DATABASE_URL": database_url,
            "FOUNDRY_LINEAR_WEBHOOK_SECRET": SECRET,
        }
        if args.workers:
            env["FOUNDRY_BRIDGE_WORKERS"] = str(args.workers)

        def raw_rate(tag: str) -> tuple[float, list[float]]:
            seconds, latencies, created = raw.run_level(api, namespace, raw.manifests(args.count, tag), args.concurrency)
            assert created == args.count
            return args.count / seconds, latencies

        # Warm the baseline too: its first few hundred creates are slower, which would flatter the ratio.
        raw.run_level(api, namespace, raw.manifests(min(args.count, 200), "warm-up-raw"), args.concurrency)
        variants = [("lean", {})] + ([("threaded", {"FOUNDRY_BRIDGE_LEAN": "0"})] if args.threaded else [])
        results = []
        raw_before, raw_lat = raw_rate("before")
        for label, extra in variants:
            with ExitStack() as bridges_stack:
                bridges = [bridges_stack.enter_context(BridgeProcess({**env, **extra})) for _ in range(2)]
                results.append((label, *_measure_bridges(bridges, args)))
        raw_after, _ = raw_rate("after")
        raw_mean = (raw_before + raw_after) / 2

    ms = 1000
    print(f"\nmachine: {os.cpu_count()} CPUs; concurrency {args.concurrency}; {args.count} tickets per measurement; "
          f"bridge workers {args.workers or 'default'}")
    print(f"raw FoundryRun creates      {raw_before:8.1f} /s before, {raw_after:8.1f} /s after "
          f"(mean {raw_mean:.1f}; p50 {statistics.median(raw_lat) * ms:.1f} ms)")
    for label, tps, lat, cpu, storm in results:
        print(f"[{label}] bridge, distinct tickets    {tps:8.1f} /s   p50 {statistics.median(lat) * ms:6.1f} ms   "
              f"p99 {percentile(lat, 0.99) * ms:6.1f} ms   bridge CPU {cpu * ms:.2f} ms/ticket")
        print(f"[{label}] ratio bridge / raw          {tps / raw_mean:8.2f}      (target >= 0.5)")
        print(f"[{label}] 64-way storm, 2 bridges     p50 {statistics.median(storm) * ms:6.1f} ms   "
              f"p99 {percentile(storm, 0.99) * ms:6.1f} ms over {args.storms} storms (target p99 < 150 ms)")
    if args.markdown:
        print(f"\n| measure (concurrency {args.concurrency}, {args.count} tickets) | "
              + " | ".join(label for label, *_ in results) + " |")
        print("|---|" + "---|" * len(results))
        print("| raw FoundryRun creates/s (mean of before/after) | " + " | ".join(f"{raw_mean:.0f}" for _ in results) + " |")
        rows = [
            ("bridge distinct tickets/s (one bridge)", lambda r: f"{r[1]:.0f}"),
            ("ratio bridge / raw", lambda r: f"{r[1] / raw_mean:.2f}"),
            ("bridge latency p50 / p99", lambda r: f"{statistics.median(r[2]) * ms:.0f} / {percentile(r[2], 0.99) * ms:.0f} ms"),
            ("bridge CPU per ticket", lambda r: f"{r[3] * ms:.1f} ms"),
            (f"64-way storm p50 / p99 (two bridges, {args.storms} storms)",
             lambda r: f"{statistics.median(r[4]) * ms:.0f} / {percentile(r[4], 0.99) * ms:.0f} ms"),
        ]
        for title, cell in rows:
            print(f"| {title} | " + " | ".join(cell(r) for r in results) + " |")
    return 0


def _measure_bridges(bridges: list[BridgeProcess], args: argparse.Namespace) -> tuple[float, list[float], float, list[float]]:
    """(tickets/s, latencies, bridge CPU seconds per ticket, storm latencies) for one pair of bridges."""

    def distinct(count: int, prefix: str, urls: list[str]) -> tuple[float, list[float]]:
        sends = [_delivery(str(uuid.uuid4()), f"{prefix}-{i + 1}") for i in range(count)]
        seconds, latencies, statuses = asyncio.run(_send(urls, sends, args.concurrency))
        wrong = [s for s in statuses if s != "created"]
        if wrong:
            raise SystemExit(f"bridge {prefix}: {len(wrong)} deliveries not created, e.g. {wrong[:3]}")
        return count / seconds, latencies

    distinct(min(args.count, 200), "WARM", [b.url for b in bridges])  # both bridges: pools, connections, caches
    pid = bridges[0].process.pid  # type: ignore[union-attr]
    cpu_before = cpu_seconds(pid)
    tps, latencies = distinct(args.count, "BENCH", [bridges[0].url])
    cpu_per_ticket = (cpu_seconds(pid) - cpu_before) / args.count

    storm_latencies: list[float] = []
    for n in range(args.storms):
        issue_id = str(uuid.uuid4())
        sends = [_delivery(issue_id, f"STORM-{n + 1}") for _ in range(64)]
        _, latencies_n, statuses = asyncio.run(_send([b.url for b in bridges], sends, 64))
        if sorted(set(statuses)) != ["attached", "created"] or statuses.count("created") != 1:
            raise SystemExit(f"storm {n}: unexpected answers {sorted(set(statuses))}")
        storm_latencies.extend(latencies_n)
    return tps, latencies, cpu_per_ticket, storm_latencies



if __name__ == "__main__":
    sys.exit(main())
