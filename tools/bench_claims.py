"""Benchmark: how fast can Foundry claim runs?

    .venv/bin/python tools/bench_claims.py [--url URL] [--sqlite]

1. distinct issues: W processes each claim their own issues back to back.
2. storm: 64 callers (8 processes x 8 threads) claim the SAME issue at once,
   round after round (a fresh issue per round); every round must yield one
   "created" and 63 "attached" sharing its run id, or the benchmark fails.

Without --url it starts a throwaway PostgreSQL (foundry.dev.postgres).
--sqlite also measures a SQLite file in WAL mode for comparison.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foundry.db import claims, migrate  # noqa: E402
from foundry.db.engine import make_engine  # noqa: E402

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
CTX = multiprocessing.get_context("fork")


def _claim(engine: Any, issue: str) -> claims.Claim:
    return claims.claim_run(engine, tracker="linear", issue_id=issue, issue_key="BENCH-1", namespace="bench",
                            ticket_updated_at=T0, name_for=lambda a: f"{issue}-a{a}")


def _distinct_worker(url: str, worker: int, count: int, start: Any, ready: Any, done: Any) -> None:
    engine = make_engine(url, pool_size=1)
    _claim(engine, f"warm-{worker}")  # connect before the clock starts
    ready.put(worker)
    start.wait()
    for n in range(count):
        assert _claim(engine, f"distinct-{worker}-{n}").status == "created"
    done.put(worker)
    engine.dispose()


def bench_distinct(url: str, workers: int, total: int) -> float:
    start, ready, done = CTX.Event(), CTX.Queue(), CTX.Queue()
    per = total // workers
    procs = [CTX.Process(target=_distinct_worker, args=(url, w, per, start, ready, done)) for w in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    t0 = time.perf_counter()
    start.set()
    for _ in procs:
        done.get(timeout=600)
    elapsed = time.perf_counter() - t0
    _join(procs)
    return per * workers / elapsed


def _storm_worker(url: str, threads: int, rounds: int, barrier: Any, results: Any) -> None:
    engine = make_engine(url, pool_size=threads)

    def caller() -> None:
        for r in range(rounds):
            barrier.wait(timeout=120)
            got = _claim(engine, f"storm-{r}")
            results.put((r, got.run_id, got.status))

    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    engine.dispose()


def bench_storm(url: str, processes: int, threads: int, rounds: int) -> tuple[float, float]:
    width = processes * threads
    barrier, results = CTX.Barrier(width + 1), CTX.Queue()  # +1: the timer joins round 0
    procs = [CTX.Process(target=_storm_worker, args=(url, threads, rounds, barrier, results))
             for _ in range(processes)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    t0 = time.perf_counter()
    # The parent is the barrier's extra party in every round, so a round starts
    # only when all 64 callers are ready and the clock covers rounds, not start-up.
    outcomes = []
    for r in range(rounds):
        outcomes += [results.get(timeout=600) for _ in range(width)]
        if r + 1 < rounds:
            barrier.wait(timeout=120)
    elapsed = time.perf_counter() - t0
    _join(procs)
    for r in range(rounds):
        this = [o for o in outcomes if o[0] == r]
        statuses = Counter(s for _, _, s in this)
        if len({run for _, run, _ in this}) != 1 or statuses != Counter(created=1, attached=width - 1):
            raise SystemExit(f"storm round {r} broke the one-run rule: {statuses}")
    return width * rounds / elapsed, rounds / elapsed


def _join(procs: list[Any]) -> None:
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise SystemExit(f"a benchmark worker failed (exit {p.exitcode})")


def run(label: str, url: str, args: argparse.Namespace) -> None:
    distinct = bench_distinct(url, args.workers, args.distinct)
    storm_claims, storms = bench_storm(url, 8, 8, args.rounds)
    print(f"{label}: distinct issues, {args.workers} processes: {distinct:8.0f} claims/s")
    print(f"{label}: 64-way same-issue storm ({args.rounds} rounds): {storm_claims:8.0f} claims/s "
          f"({storms:.1f} storms/s, each 1 created + 63 attached)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="PostgreSQL server database URL to use (default: a throwaway server)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--distinct", type=int, default=4000, help="claims in the distinct-issues run")
    parser.add_argument("--rounds", type=int, default=30, help="storm rounds")
    parser.add_argument("--sqlite", action="store_true", help="also measure a SQLite WAL file")
    args = parser.parse_args()
    where = f"server {args.url}" if args.url else "throwaway PostgreSQL, fsync/synchronous_commit off"
    print(f"machine: {os.cpu_count()} CPUs; {where}")

    from foundry.dev.postgres import PostgresServer, create_database, drop_database

    server = None if args.url else PostgresServer.start()
    admin = args.url or server.url  # type: ignore[union-attr]
    try:
        url = create_database(admin, "foundry_bench")
        try:
            migrate.upgrade(url)
            run("postgresql", url, args)
        finally:
            drop_database(admin, "foundry_bench")
    finally:
        if server:
            server.stop()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            migrate.upgrade(url)
            run("sqlite-wal", url, args)


if __name__ == "__main__":
    main()
