#!/usr/bin/env python3
"""Operator failover: how long after the leader dies (kill -9) the standby holds the Lease and
reconciles, over --kills kills, and how long a clean stop (SIGTERM) takes to hand over.

    .venv/bin/python tools/bench_failover.py                 # throwaway control plane + PostgreSQL
    .venv/bin/python tools/bench_failover.py --kills 20 --stops 5 --runs 10 --json

Two operator processes (tests.support.operator_pair: the production Deps in
`python -m tests.support.operator_kit` children, leader election on with
client-go's defaults, 15 s / 10 s / 2 s) watch a fresh namespace with --runs
runs waiting for approval. Each round kills the Lease's holder with SIGKILL at
a random moment of its renewal cycle and measures, from the kill:

- takeover: the standby's acquireTime in the Lease;
- first reconcile: the new leader's "leading: N known run(s) due now" log line;

then restarts the killed process as the new standby and waits until it
watches. The stops are the same with SIGTERM, which releases the Lease. At the
end every run must still have exactly one plan comment.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

# tests.support (the harnesses) is importable from the repository root only.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client  # noqa: E402

from tests.support.benchenv import bench_servers  # noqa: E402
from tests.support.operator_kit import wait_phase  # noqa: E402
from tests.support.operator_pair import RETRY_PERIOD, OperatorPair, election_config  # noqa: E402
from tests.support.operator_stack import OperatorStack  # noqa: E402

_LEADING = re.compile(r"^(\S+ \S+) INFO foundry\.operator\.controller leading")


def _first_leading_after(op: Any, after: float) -> float | None:
    for line in op.log_path.read_text(errors="replace").splitlines():
        m = _LEADING.match(line)
        if m:
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= after:
                return at
    return None


def _wait_first_leading(op: Any, after: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at = _first_leading_after(op, after)
        if at is not None:
            return at
        time.sleep(0.05)
    raise SystemExit(f"no 'leading' line in the new leader's log\n{op.log_tail()}")


def handover(pair: OperatorPair, *, clean: bool) -> dict[str, float]:
    leader = pair.holder()
    if leader is None:
        raise SystemExit("nobody holds the Lease")
    standby = pair.other(leader)
    # A random moment of the leader's 2 s renewal cycle.
    time.sleep(random.uniform(0, RETRY_PERIOD))
    at = time.time()
    if clean:
        assert leader.stop() == 0, leader.log_tail()
    else:
        pair.kill(leader)
    acquired = pair.wait_holder(standby, after=at - 1)
    leading = _wait_first_leading(standby, at)
    leader.start()
    # A child's start imports kopf and the clients: minutes on a machine shared with test suites.
    pair.wait_started(leader, timeout=300)
    return {"takeover": acquired - at, "first_reconcile": leading - at}


def _summary(samples: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(samples), "max": max(samples), "min": min(samples), "n": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--stops", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10, help="runs waiting for approval throughout")
    parser.add_argument("--kubeconfig", help="an existing cluster (default: a throwaway local control plane)")
    parser.add_argument("--database-url", help="an existing PostgreSQL database (default: a throwaway one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with ExitStack() as stack:
        servers = bench_servers(stack, prefix="foundry-bench-failover-", kubeconfig=args.kubeconfig,
                                database_url=args.database_url)
        workdir, kubeconfig, database_url = servers.workdir, servers.kubeconfig, servers.database_url
        engine, api = servers.engine, servers.api
        namespace = f"foundry-bench-{uuid.uuid4().hex[:8]}"
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        stack.callback(core.delete_namespace, namespace)

        ops = stack.enter_context(OperatorStack.open(api, engine, namespace, election_config()))
        pair = stack.enter_context(OperatorPair.open(ops, kubeconfig, database_url, workdir))
        pair.start_leader_then_standby()
        tickets = [ops.ticket(f"Add a health endpoint, number {i}") for i in range(args.runs)]
        for _, run in tickets:
            wait_phase(api, namespace, run, "WaitingApproval", timeout=120)

        kills = []
        for i in range(args.kills):
            kills.append(handover(pair, clean=False))
            print(f"kill {i + 1}: takeover {kills[-1]['takeover']:.2f}s, first reconcile "
                  f"{kills[-1]['first_reconcile']:.2f}s", file=sys.stderr)
        stops = []
        for i in range(args.stops):
            stops.append(handover(pair, clean=True))
            print(f"stop {i + 1}: takeover {stops[-1]['takeover']:.2f}s", file=sys.stderr)

        duplicates = [issue for issue, _ in tickets if ops.comment_purposes(issue) != ["approval_request"]]

    result = {
        "kill_takeover_seconds": _summary([k["takeover"] for k in kills]),
        "kill_first_reconcile_seconds": _summary([k["first_reconcile"] for k in kills]),
        "stop_takeover_seconds": _summary([s["takeover"] for s in stops]) if stops else None,
        "runs": args.runs,
        "runs_with_a_comment_twice_or_missing": len(duplicates),
    }
    k, f = result["kill_takeover_seconds"], result["kill_first_reconcile_seconds"]
    print(f"kill -9 ({k['n']}): takeover p50 {k['p50']:.2f}s max {k['max']:.2f}s; first reconcile "
          f"p50 {f['p50']:.2f}s max {f['max']:.2f}s")
    if stops:
        s = result["stop_takeover_seconds"]
        print(f"clean stop ({s['n']}): takeover p50 {s['p50']:.2f}s max {s['max']:.2f}s")
    print(f"runs with a plan comment twice or missing: {len(duplicates)} of {args.runs}")
    if args.json:
        print(json.dumps(result, indent=2))
    return 1 if duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
