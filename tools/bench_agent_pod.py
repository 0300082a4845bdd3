#!/usr/bin/env python3
"""Agent attempts on the real node: how long from dispatch until the pod runs, and until the Job completes.

    sudo .venv/bin/python tools/bench_agent_pod.py            # 10 attempts
    sudo .venv/bin/python tools/bench_agent_pod.py -n 20 --json
    sudo .venv/bin/python tools/bench_agent_pod.py --plan     # 10 plan Jobs, the real Claude Code scripted

Starts a real single-node cluster (foundry.dev.node, needs root), imports the
locally built agent image (foundry.dev.images; built first if missing) and
runs N attempts one after another through the operator's JobProvider, each in
a namespace enforcing `restricted`, with the `command` runner (a small edit, no
model) against the GitHub stand-in on the node IP with a GitHub App token per
attempt. For each it records, from the moment dispatch() is called:

- started:  the first step's container runs (scheduled, sandbox and volumes up);
- running:  the pod's phase is Running (prepare and agent done, publish started);
- complete: the Job controller set Complete;
- reported: JobProvider.state() returned the pushed result.

With --plan, each is a plan Job (`<run>-p1`, JobProvider.dispatch_plan) run by
the real Claude Code CLI in its plan mode against the model stand-in, on a
scripted session (read the code, an edit its plan mode refuses, the plan), with
the read-only App token; `running` is then the verify step started, and
`reported` the moment JobProvider.plan_state() returned the checked plan.

Prints p50/p95 (nearest rank) of each, plus the node's figures. The clock starts
at dispatch, so the operator's own reaction to an approval is not in it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.agent_node import AgentPodBed, agent_image  # noqa: E402
from tests.test_runner_plan import read_only_session  # noqa: E402
from foundry.dev.node import NodeCluster, coredns_binary, node_bin_dir  # noqa: E402

MARKS = ("started", "running", "complete", "reported")


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


CLAUDE = {"name": "claude-code", "model": "claude-sonnet-4-5", "timeout_seconds": 300}


def one_attempt(bed: AgentPodBed, namespace: str, *, plan: bool = False) -> dict[str, float]:
    if plan:
        bed.model.set_script(read_only_session("claude-code", "/foundry/work/repo"))
    runner = CLAUDE if plan else bed.command_runner()
    attempt = bed.dispatch(bed.config(namespace, runner=runner), plan=plan)
    attempt.wait_running(timeout=180)
    attempt.wait_job("Complete", timeout=300)
    st = attempt.wait_ended(timeout=60, poll=0.1)
    if st.get("outcome") != ("planned" if plan else "pushed") or (plan and not st.get("plan")):
        raise SystemExit(f"{attempt.name} did not {'plan' if plan else 'push'}: {st}")
    marks = dict(attempt.marks)
    marks["reported"] = marks.pop("ended")
    return marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10, help="attempts (default 10)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--plan", action="store_true", help="plan Jobs with the scripted Claude Code instead")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_agent_pod: the real node needs root (containerd, kubelet, network namespaces)", file=sys.stderr)
        return 1
    ref, tar = agent_image()
    state_root = Path(tempfile.mkdtemp(prefix="foundry-bench-node-"))
    cluster = NodeCluster(bin_dir=node_bin_dir(build=True), state_root=state_root, coredns=coredns_binary(build=True))
    runs: list[dict[str, float]] = []
    try:
        cluster.start()
        t = time.monotonic()
        cluster.import_image(tar, ref)
        imported_s = time.monotonic() - t
        print(f"[bench] imported {ref} in {imported_s:.1f} s", file=sys.stderr)
        what = "plan" if args.plan else "attempt"
        with AgentPodBed(cluster, ref) as bed:
            namespace = bed.namespace("bench")
            for i in range(args.n):
                marks = one_attempt(bed, namespace, plan=args.plan)
                runs.append(marks)
                print(f"[bench] {what} {i + 1}/{args.n}: " + " ".join(f"{k} {marks[k]:.2f}s" for k in MARKS),
                      file=sys.stderr)
    finally:
        cluster.stop()
    summary = {k: {"p50": round(nearest_rank([r[k] for r in runs], 0.5), 2),
                   "p95": round(nearest_rank([r[k] for r in runs], 0.95), 2),
                   "mean": round(statistics.fmean(r[k] for r in runs), 2)} for k in MARKS}
    out = {"attempts": len(runs), "plans": args.plan, "image": ref, "node_ready_s": cluster.timings.get("node_ready_s"),
           "image_import_s": round(imported_s, 1), "load_average": [round(x, 1) for x in os.getloadavg()],
           "cpus": os.cpu_count(), "machine": platform.machine(), "from_dispatch_s": summary, "runs": runs}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    if args.plan:
        print(f"{len(runs)} plan Jobs (Claude Code, scripted, one at a time); seconds from "
              "JobProvider.dispatch_plan()")
    else:
        print(f"{len(runs)} attempts (command runner, one at a time); seconds from JobProvider.dispatch()")
    print(f"{'until':<10} {'p50':>6} {'p95':>6} {'mean':>6}")
    for k in MARKS:
        print(f"{k:<10} {summary[k]['p50']:>6.2f} {summary[k]['p95']:>6.2f} {summary[k]['mean']:>6.2f}")
    print(f"node Ready {out['node_ready_s']} s, image import {out['image_import_s']} s, "
          f"load average {out['load_average']} on {out['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
