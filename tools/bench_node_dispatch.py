#!/usr/bin/env python3
"""Approval → agent pod running, through the operator, on the real node.

    sudo .venv/bin/python tools/bench_node_dispatch.py            # 20 runs
    sudo .venv/bin/python tools/bench_node_dispatch.py -n 5 --json

Starts a real single-node cluster (foundry.dev.node; needs root), or uses the
one FOUNDRY_TEST_KUBECONFIG names (tests.support.node_external), and a
throwaway PostgreSQL (or --database-url). The operator runs in this process
(kopf in a thread, the real JobProvider with a GitHub App token per attempt,
the Linear and GitHub stand-ins; tests.support.operator_node). Runs go one at
a time: a ticket is planned; the clock starts when its FoundryApproval is
created (what `foundry approve` does), and the agent namespace is polled every
50 ms for:

- job:       the attempt's Job exists (the operator saw the approval and dispatched);
- scheduled: its pod is bound to the node;
- started:   the pod's first step runs (sandbox, volumes and the token Secret are up);
- running:   the pod's phase is Running (prepare and agent done, publish started).

Each run then goes on to its pull request (the `command` runner: a small edit, no
model) and is stopped before the next starts. Prints p50/p95 (nearest rank) of each mark.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MARKS = ("job", "scheduled", "started", "running")


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def one_run(stack, bed, agents: str) -> dict[str, float]:
    from kubernetes import client

    from foundry.agents.job_manifest import attempt_selector
    from tests.support.operator_kit import wait_phase
    from tests.support.agent_node import pod_started

    _, run = stack.ticket()
    wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=60)
    body = stack.run(run)
    selector = attempt_selector(body, 1)
    batch = client.BatchV1Api(bed.api)
    t0 = time.monotonic()
    stack.decide(run, "approve", "alice")
    marks: dict[str, float] = {}
    deadline = t0 + 180
    while "running" not in marks:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run}: no running agent pod within 180 s (marks {marks})")
        now = round(time.monotonic() - t0, 3)
        if "job" not in marks and batch.list_namespaced_job(agents, label_selector=selector).items:
            marks["job"] = now
        for pod in bed.core.list_namespaced_pod(agents, label_selector=selector).items:
            marks.setdefault("job", now)
            if pod.spec.node_name:
                marks.setdefault("scheduled", now)
            if pod_started(pod):
                marks.setdefault("scheduled", now)
                marks.setdefault("started", now)
            if pod.status.phase in ("Running", "Succeeded", "Failed"):
                for mark in MARKS:
                    marks.setdefault(mark, now)
        time.sleep(0.05)
    # The attempt's work lands; then a stop ends the run, so finished runs leave no resync behind.
    wait_phase(stack.api, stack.namespace, run, "PROpen", timeout=240)
    stack.decide(run, "stop", "alice")
    wait_phase(stack.api, stack.namespace, run, "Stopped", timeout=60)
    return marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="runs (default 20)")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_node_dispatch: the real node needs root (containerd, kubelet, network namespaces)",
              file=sys.stderr)
        return 1
    from kubernetes import client

    from foundry.db.engine import make_engine
    from foundry.kube.crds import install_crds
    from tests.support.agent_node import AgentPodBed, agent_image
    from tests.support.benchenv import database_url_or_local_postgres
    from foundry.dev.binaries import control_plane_bin_dir
    from foundry.dev.node import NodeCluster, coredns_binary, node_bin_dir
    from tests.support.node_external import external_node
    from tests.support.operator_node import operator_config, operator_on_node

    logging_quiet()
    runs: list[dict[str, float]] = []
    with ExitStack() as stack:
        ref, tar = agent_image()
        cluster = external_node(os.environ, control_plane_bin_dir(build=True))
        if cluster is None:
            state_root = Path(tempfile.mkdtemp(prefix="foundry-bench-node-"))
            cluster = NodeCluster(bin_dir=node_bin_dir(build=True), state_root=state_root,
                                  coredns=coredns_binary(build=True))
        stack.callback(cluster.stop)
        cluster.start()
        cluster.import_image(tar, ref)
        url = database_url_or_local_postgres(args.database_url, stack)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        api = stack.enter_context(cluster.api_client())
        install_crds(api, timeout=60)
        core = client.CoreV1Api(api)
        namespace = f"bench-runs-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": namespace}})
        stack.callback(core.delete_namespace, namespace)
        bed = stack.enter_context(AgentPodBed(cluster, ref))
        agents = bed.namespace("bench")
        doc = operator_config(bed, agents, runner=bed.command_runner())
        op = stack.enter_context(operator_on_node(bed, engine, namespace, doc))
        for i in range(args.n):
            marks = one_run(op, bed, agents)
            runs.append(marks)
            print(f"[bench] run {i + 1}/{args.n}: " + " ".join(f"{k} {marks[k]:.2f}s" for k in MARKS),
                  file=sys.stderr)
    summary = {k: {"p50": round(nearest_rank([r[k] for r in runs], 0.5), 2),
                   "p95": round(nearest_rank([r[k] for r in runs], 0.95), 2),
                   "mean": round(statistics.fmean(r[k] for r in runs), 2)} for k in MARKS}
    out = {"runs": len(runs), "image": ref, "load_average": [round(x, 1) for x in os.getloadavg()],
           "cpus": os.cpu_count(), "from_approval_s": summary, "each": runs}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{len(runs)} runs (operator in-process, command runner, one at a time); seconds from the approval")
    print(f"{'until':<10} {'p50':>6} {'p95':>6} {'mean':>6}")
    for k in MARKS:
        print(f"{k:<10} {summary[k]['p50']:>6.2f} {summary[k]['p95']:>6.2f} {summary[k]['mean']:>6.2f}")
    print(f"load average {out['load_average']} on {out['cpus']} CPUs")
    return 0


def logging_quiet() -> None:
    """kopf and the operator log every step at INFO; the figures are what this prints."""
    import logging

    logging.basicConfig(level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
