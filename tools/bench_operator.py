#!/usr/bin/env python3
"""Operator throughput and memory: runs/s from intake to WaitingApproval and from approval to AgentRunning, through one operator, and its RSS at 1,000 idle runs.

    .venv/bin/python tools/bench_operator.py                 # throwaway control plane + PostgreSQL
    .venv/bin/python tools/bench_operator.py --runs 20 --idle 100 --json

One `foundry operator -n NS` process (the production entry point, Deps built
from FOUNDRY_CONFIG, FOUNDRY_DATABASE_URL, KUBECONFIG and the two API keys)
watches a fresh namespace. This process plays everyone else: the local Linear
and GitHub servers (tests.support.operator_stack), the bridge (each ticket is
a Linear issue, a claim in the database and a FoundryRun, as the bridge makes
them) and the approver (a FoundryApproval per run). Then:

1. intake: --runs tickets created at --concurrency; the clock runs from the
   first create until every run is WaitingApproval (one list call per 0.2 s);
2. dispatch: all of them approved; the clock runs until every run is
   AgentRunning, and exactly one Job per run is checked;
3. idle: more ready tickets until --idle runs are active and waiting (the
   --runs AgentRunning ones plus the rest WaitingApproval); once the
   operator's CPU goes quiet its VmRSS and VmHWM (/proc) are read;
4. the API floor (unless --no-floor): the operator stopped, the same number of
   intakes' worth of API requests alone (create, two status PATCHes, two
   Events, an approvals LIST) in another namespace, so the API server's and
   etcd's own CPU per intake, and the ceiling they put on runs/s, show.

RSS is also read with the operator started and idle (after a warm-up ticket)
and after phase 2, so the per-run cost shows. The resync period is the
production default (60 s), so AgentRunning runs are polled as they would be.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

# tests.support (the harnesses) is importable from the repository root only.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client  # noqa: E402

from foundry.operator.kubeio import GROUP, RUNS, VERSION  # noqa: E402
from tests.support.benchenv import bench_servers  # noqa: E402
from tests.support.linear_process import LinearProcess  # noqa: E402
from tests.support.operator_process import operator_env, write_config  # noqa: E402
from tests.support.operator_stack import OperatorStack, stack_config  # noqa: E402
from foundry.dev.postgres import free_port  # noqa: E402

MIB = 1024 * 1024


# ---- reading the operator process (Linux /proc) ---------------------------------

def rss_mib(pid: int | list[int]) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB (summed over a list of them): resident now, and its peak."""
    if isinstance(pid, list):
        each = [rss_mib(p) for p in pid]
        return sum(r for r, _ in each), sum(h for _, h in each)
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def cpu_seconds(pid: int | list[int]) -> float:
    """User + system CPU time of a process (or of a list of them) so far."""
    if isinstance(pid, list):
        return sum(cpu_seconds(p) for p in pid)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(operator_pid: int | list[int], named: dict[int, str] | None = None) -> Counter[str]:
    """CPU seconds so far of this process and its descendants, grouped: the
    operator, this process (the stand-ins, the creates, the polling), and the
    servers by command name (kube-apiserver, etcd, postgres). Other people's
    servers on the machine are not descendants and so not counted."""
    stats = {int(d): st for d in os.listdir("/proc") if d.isdigit() and (st := _stat(int(d)))}
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: Counter[str] = Counter()
    operators = set(operator_pid) if isinstance(operator_pid, list) else {operator_pid}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid in stats:
            comm, _, cpu = stats[pid]
            label = ("operator" if pid in operators else "bench" if pid == os.getpid()
                     else (named or {}).get(pid, comm))
            out[label] += cpu
    return out


def wait_quiet(pid: int | list[int], *, window: float = 3.0, busy: float = 0.05, timeout: float = 90.0) -> float:
    """Wait until the process uses less than `busy` of a core over `window` seconds; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if (cpu_seconds(pid) - before) / window < busy:
            break
    return time.monotonic() - started


def scrape_metrics(port: int | list[int]) -> dict[str, float]:
    """The operator's reconcile count and total seconds, and its transitions, from /metrics (summed
    over the shards' operators for a list of ports)."""
    if isinstance(port, list):
        total: Counter[str] = Counter()
        for one in port:
            total.update(scrape_metrics(one))
        return dict(total)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {"transitions": 0.0}
    for line in text.splitlines():
        if line.startswith("foundry_reconcile_seconds_count"):
            out["reconciles"] = float(line.split()[-1])
        elif line.startswith("foundry_reconcile_seconds_sum"):
            out["reconcile_seconds"] = float(line.split()[-1])
        elif line.startswith("foundry_run_transitions_total"):
            out["transitions"] += float(line.split()[-1])
    return out


# ---- the cluster side -------------------------------------------------------------

def phases(api: client.ApiClient, namespace: str) -> Counter[str]:
    """Runs by phase in the namespace: one list call ("" = no phase yet)."""
    response = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, RUNS, _preload_content=False)
    items = json.loads(response.data)["items"]
    return Counter((item.get("status") or {}).get("phase") or "" for item in items)


def wait_until(api: client.ApiClient, namespace: str, done: Callable[[Counter[str]], bool], *, what: str,
               timeout: float, interval: float = 0.2, alive: Callable[[], None] = lambda: None) -> Counter[str]:
    deadline = time.monotonic() + timeout
    seen: Counter[str] = Counter()
    while time.monotonic() < deadline:
        alive()
        seen = phases(api, namespace)
        if done(seen):
            return seen
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}; runs by phase: {dict(seen)}")


def parallel(count: int, concurrency: int, one: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


# ---- the operator process -----------------------------------------------------------

class Operator:
    """`foundry operator -n NS` as a child process, its log in a file. With `tree` (a
    checkout's root) the process starts there without PYTHONPATH, so `-m` imports that
    tree's foundry: how tools/bench_scale.py compares two operators on the same runs."""

    def __init__(self, stack: OperatorStack, kubeconfig: str, database_url: str, workdir: Path,
                 cfg: dict[str, Any], workers: int, tree: Path | None = None,
                 shard: tuple[int, int] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        env = operator_env(stack, kubeconfig, database_url, write_config(stack, workdir / "foundry.yaml", cfg))
        env["FOUNDRY_METRICS_PORT"] = str(self.metrics_port)
        if tree is not None:
            env.pop("PYTHONPATH", None)
        if shard is not None:
            env["FOUNDRY_SHARD_INDEX"], env["FOUNDRY_SHARD_COUNT"] = str(shard[0]), str(shard[1])
        self.log_path = workdir / "operator.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "foundry.cli.main", "operator", "-n", stack.namespace, "--workers", str(workers)],
            env=env, cwd=str(tree) if tree is not None else None, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    @property
    def metrics_ports(self) -> list[int]:
        return [self.metrics_port]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")

    def wait_metrics(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                scrape_metrics(self.metrics_port)
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"the operator did not serve metrics within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM, then SIGKILL after 30 s; `kill` sends SIGKILL at once (an operator with a
        daemon per run would spend its SIGTERM cancelling each of them, for nothing here)."""
        if self.proc.poll() is None:
            if not kill:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


class Shards:
    """--shards N: N `foundry operator` processes, shard i of N each (FOUNDRY_SHARD_INDEX/COUNT),
    read as one: CPU, memory and reconciles summed."""

    def __init__(self, ops: list[Operator]) -> None:
        self.ops = ops

    @property
    def pids(self) -> list[int]:
        return [op.pid for op in self.ops]

    @property
    def metrics_ports(self) -> list[int]:
        return [op.metrics_port for op in self.ops]

    def check_alive(self) -> None:
        for op in self.ops:
            op.check_alive()

    def wait_metrics(self, timeout: float = 60.0) -> None:
        for op in self.ops:
            op.wait_metrics(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- shard {i}\n{op.log_tail(lines)}" for i, op in enumerate(self.ops))

    def stop(self, *, kill: bool = False) -> None:
        for op in self.ops:
            op.stop(kill=kill)


# ---- the benchmark ----------------------------------------------------------------

def bench(stack: OperatorStack, op: "Operator | Shards", args: argparse.Namespace) -> dict[str, Any]:
    api, ns = stack.api, stack.namespace
    result: dict[str, Any] = {"cpus": os.cpu_count(), "runs": args.runs, "idle_target": args.idle,
                              "concurrency": args.concurrency, "workers": args.workers, "shards": args.shards,
                              "linear": "in this process" if args.linear_in_process else "in its own process"}
    op.wait_metrics()

    # Warm-up: one ticket all the way to AgentRunning loads every module a run needs.
    _, warm = stack.ticket()
    wait_until(api, ns, lambda p: p["WaitingApproval"] == 1, what="the warm-up run", timeout=60, alive=op.check_alive)
    stack.decide(warm)
    wait_until(api, ns, lambda p: p["AgentRunning"] == 1, what="the warm-up run", timeout=60, alive=op.check_alive)
    wait_quiet(op.pids)
    result["rss_start_mib"], _ = rss_mib(op.pids)

    def measured(label: str) -> Callable[[Callable[[], Counter[str]]], Counter[str]]:
        def run(body: Callable[[], Counter[str]]) -> Counter[str]:
            metrics, cpu, started = scrape_metrics(op.metrics_ports), cpu_seconds(op.pids), time.monotonic()
            machine = cpu_by_process(op.pids, args.named_pids)
            seen = body()
            seconds = time.monotonic() - started
            # A reconcile ends a little after its last status write: count CPU
            # and reconciles once the operator has gone quiet.
            result[f"{label}_quiet_after_seconds"] = round(wait_quiet(op.pids), 1)
            after = scrape_metrics(op.metrics_ports)
            spent = cpu_by_process(op.pids, args.named_pids)
            spent.subtract(machine)
            reconciles = after["reconciles"] - metrics["reconciles"]
            result[label] = {
                "seconds": round(seconds, 2), "runs_per_s": round(args.runs / seconds, 1) if label != "idle" else None,
                "operator_cpu_ms_per_run": round((cpu_seconds(op.pids) - cpu) * 1000 / count[label], 1),
                "reconciles": int(reconciles),
                "reconcile_ms_mean": round((after["reconcile_seconds"] - metrics["reconcile_seconds"]) * 1000
                                           / max(reconciles, 1), 1),
                "cpu_ms_per_run_by_process": {k: round(v * 1000 / count[label], 1)
                                              for k, v in spent.most_common() if v > 0.05},
            }
            return seen
        return run

    count = {"intake": args.runs, "dispatch": args.runs, "idle": max(args.idle - args.runs - 1, 1)}
    created: list[str] = []

    # Phase 1: intake → WaitingApproval.
    def intake() -> Counter[str]:
        started = time.monotonic()
        created.extend(name for _, name in parallel(args.runs, args.concurrency, lambda i: stack.ticket()))
        result["intake_create_seconds"] = round(time.monotonic() - started, 2)
        return wait_until(api, ns, lambda p: p["WaitingApproval"] == args.runs, what="intake",
                          timeout=args.timeout, alive=op.check_alive)

    print(f"phase 1: {args.runs} tickets to WaitingApproval...", file=sys.stderr)
    measured("intake")(intake)
    result["_waiting_status"] = stack.run(created[0])["status"]  # what the floor's requests carry (phase 4)

    # Phase 2: approval → AgentRunning (a Job per run).
    def dispatch() -> Counter[str]:
        parallel(len(created), args.concurrency, lambda i: stack.decide(created[i]))
        return wait_until(api, ns, lambda p: p["AgentRunning"] == args.runs + 1, what="dispatch",
                          timeout=args.timeout, alive=op.check_alive)

    print(f"phase 2: {args.runs} approvals to AgentRunning...", file=sys.stderr)
    measured("dispatch")(dispatch)
    jobs = Counter(name.rsplit("-a", 1)[0] for name in stack.jobs())
    if len(jobs) != args.runs + 1 or set(jobs.values()) != {1}:
        raise SystemExit(f"expected one Job per run for {args.runs + 1} runs, found {sum(jobs.values())} "
                         f"Jobs for {len(jobs)} runs")
    result["rss_at_runs_mib"], _ = rss_mib(op.pids)

    # Phase 3: fill up to --idle waiting runs, let the operator settle, read its memory.
    more = count["idle"]

    def idle() -> Counter[str]:
        parallel(more, args.concurrency, lambda i: stack.ticket())
        return wait_until(api, ns, lambda p: p["WaitingApproval"] == more, what="the idle runs",
                          timeout=args.timeout, interval=1.0, alive=op.check_alive)

    print(f"phase 3: {more} more tickets, to {args.runs + 1 + more} idle runs...", file=sys.stderr)
    seen = measured("idle")(idle)
    result["idle"]["runs_per_s"] = round(more / result["idle"]["seconds"], 1)
    result["settle_seconds"] = result["idle_quiet_after_seconds"]
    result["idle_runs"] = sum(seen.values())
    result["rss_idle_mib"], result["hwm_mib"] = rss_mib(op.pids)
    result["rss_per_idle_run_kib"] = round((result["rss_idle_mib"] - result["rss_start_mib"]) * 1024
                                           / max(result["idle_runs"] - 1, 1), 1)
    return result


def api_floor(stack: OperatorStack, args: argparse.Namespace, waiting: dict[str, Any]) -> dict[str, Any]:
    """The ceiling the API server and etcd put on intake here, with no operator, database or Linear:
    in a namespace no operator watches, each of --runs runs gets exactly the requests an intake
    costs the API server (the bridge's create, then what the operator sends: two conditional status
    PATCHes, two Events, one approvals LIST), from --workers threads, with the status and Event
    bodies the operator wrote for a run in phase 1 (`waiting`, its status). Returns runs/s and CPU per intake."""
    from foundry.operator.events import post_event
    from foundry.operator.kubeio import MERGE_PATCH, list_approvals

    api, custom = stack.api, client.CustomObjectsApi(stack.api)
    analysing = {"phase": "Analysing", "conditions": [c for c in waiting.get("conditions") or []
                                                      if c.get("type") != "Approved"]}
    namespace = f"foundry-floor-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    # The manifests first: making them is the harness's cost, not the API server's.
    manifests = [_floor_manifest(namespace, i) for i in range(args.runs)]

    def one(i: int) -> None:
        made = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, manifests[i])
        rv = made["metadata"]["resourceVersion"]
        for status in (analysing, waiting):
            made = custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, RUNS, made["metadata"]["name"],
                {"metadata": {"resourceVersion": rv}, "status": status}, _content_type=MERGE_PATCH)
            rv = made["metadata"]["resourceVersion"]
            post_event(api, made, "Planned", waiting.get("message") or "planned")
        list_approvals(api, namespace, made["metadata"]["name"])

    machine = cpu_by_process([], args.named_pids)  # no operator runs
    started = time.monotonic()
    parallel(args.runs, args.workers, one)
    seconds = time.monotonic() - started
    spent = cpu_by_process([], args.named_pids)  # no operator runs
    spent.subtract(machine)
    per = {k: round(v * 1000 / args.runs, 1) for k, v in spent.most_common() if v > 0.05}
    server_ms = per.get("kube-apiserver", 0.0) + per.get("etcd", 0.0)
    return {"runs": args.runs, "seconds": round(seconds, 2), "runs_per_s": round(args.runs / seconds, 1),
            "cpu_ms_per_run_by_process": per, "api_server_and_etcd_ms_per_run": round(server_ms, 1),
            "ceiling_runs_per_s": round((os.cpu_count() or 1) * 1000 / server_ms, 1) if server_ms else None}


def _floor_manifest(namespace: str, i: int) -> dict[str, Any]:
    from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest

    snapshot = TicketSnapshot(tracker="linear", issue_id=f"floor-{uuid.uuid4()}", issue_key=f"ACME-{i + 1}",
                              title="Add a health endpoint to the service", team_key="ACME",
                              description="A ready ticket as the bridge snapshots it.", labels=("foundry",))
    return build_run_manifest(snapshot, 1, Trigger(source="webhook", delivery_id=str(uuid.uuid4())),
                              namespace=namespace)


def report(r: dict[str, Any]) -> None:
    who = "one operator" if r["shards"] == 1 else f"{r['shards']} operators, a shard each"
    print(f"\nmachine: {r['cpus']} CPUs; {who} (--workers {r['workers']}); tickets created at "
          f"concurrency {r['concurrency']} (the {r['runs']} intake creates took {r['intake_create_seconds']:.1f} s); "
          f"Linear stand-in {r['linear']}")
    print("| phase | runs | wall | runs/s | operator CPU per run | reconciles | mean reconcile |")
    print("|---|---|---|---|---|---|---|")
    for label, title in (("intake", "intake → WaitingApproval"), ("dispatch", "approval → AgentRunning"),
                         ("idle", "intake at scale (fill to idle)")):
        p = r[label]
        runs = r["runs"] if label != "idle" else r["idle_runs"] - r["runs"] - 1
        print(f"| {title} | {runs} | {p['seconds']:.1f} s | {p['runs_per_s']:.1f} | "
              f"{p['operator_cpu_ms_per_run']:.0f} ms | {p['reconciles']} | {p['reconcile_ms_mean']:.0f} ms |")
    print("\nCPU per run, by process (ms): " + "; ".join(
        f"{label}: " + ", ".join(f"{k} {v:.0f}" for k, v in r[label]["cpu_ms_per_run_by_process"].items())
        for label in ("intake", "dispatch", "idle")))
    print("\n| operator RSS | MiB |\n|---|---|")
    print(f"| started, 1 run (warm) | {r['rss_start_mib']:.0f} |")
    print(f"| after phase 2, {r['runs'] + 1} runs | {r['rss_at_runs_mib']:.0f} |")
    print(f"| {r['idle_runs']} idle runs, settled {r['settle_seconds']:.0f} s | {r['rss_idle_mib']:.0f} |")
    print(f"| peak (VmHWM) | {r['hwm_mib']:.0f} |")
    print(f"| per idle run | {r['rss_per_idle_run_kib']:.0f} KiB |")
    f = r.get("api_floor")
    if f:
        print(f"\nAPI floor (no operator: only the requests an intake costs the API server, {f['runs']} runs "
              f"from --workers threads): {f['runs_per_s']:.1f} runs/s; kube-apiserver + etcd "
              f"{f['api_server_and_etcd_ms_per_run']:.0f} ms of CPU per intake, so at most "
              f"{f['ceiling_runs_per_s']:.0f} runs/s on {r['cpus']} cores if nothing else ran; by process (ms): "
              + ", ".join(f"{k} {v:.0f}" for k, v in f["cpu_ms_per_run_by_process"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="cluster to use (default: a throwaway local control plane)")
    parser.add_argument("--database-url", help="PostgreSQL to use (default: a throwaway server)")
    parser.add_argument("--runs", type=int, default=200, help="runs driven through phases 1 and 2")
    parser.add_argument("--idle", type=int, default=1000, help="active idle runs when RSS is read")
    parser.add_argument("--concurrency", type=int, default=8, help="threads creating tickets and approvals")
    parser.add_argument("--workers", type=int, default=16, help="the operator's --workers")
    parser.add_argument("--shards", type=int, default=1,
                        help="operator processes, each owning a shard of the runs (by a hash of the name)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each phase may take")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip phase 4, the API floor: the intake's API requests alone, with no operator")
    parser.add_argument("--linear-in-process", action="store_true",
                        help="serve the Linear stand-in from this process (as before: it then shares this "
                        "process's GIL with the ticket creates and the polling, and the operator's Linear "
                        "requests queue behind them); default: a process of its own")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.idle < args.runs + 2 or args.concurrency < 1:
        parser.error("--runs and --concurrency must be at least 1, and --idle at least --runs + 2")
    if args.shards < 1:
        parser.error("--shards must be at least 1")

    with ExitStack() as stack:
        servers = bench_servers(stack, prefix="foundry-bench-operator-", kubeconfig=args.kubeconfig,
                                database_url=args.database_url, pool_size=args.concurrency)
        workdir, kubeconfig, database_url = servers.workdir, servers.kubeconfig, servers.database_url
        engine, api = servers.engine, servers.api
        namespace = f"foundry-bench-{uuid.uuid4().hex[:8]}"
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        stack.callback(core.delete_namespace, namespace)

        cfg = stack_config()
        # The production resync period (the stand's 1 s exists for the lost-webhook tests).
        cfg["timeouts"] = {**cfg["timeouts"], "resync_seconds": 60, "pr_wait_seconds": 1800}
        linear = None if args.linear_in_process else LinearProcess()
        args.named_pids = {} if linear is None else {linear.pid: "linear"}
        ops = stack.enter_context(OperatorStack.open(api, engine, namespace, cfg, linear=linear))
        if args.shards == 1:
            op: Operator | Shards = Operator(ops, kubeconfig, database_url, workdir, cfg, args.workers)
        else:
            op = Shards([Operator(ops, kubeconfig, database_url, workdir / f"shard-{i}", cfg, args.workers,
                                  shard=(i, args.shards)) for i in range(args.shards)])
        stack.callback(op.stop)
        try:
            result = bench(ops, op, args)
            if not args.no_floor:
                op.stop(kill=True)  # the floor is the API server's alone
                print(f"phase 4: the API floor, {args.runs} intakes' requests with no operator...", file=sys.stderr)
                result["api_floor"] = api_floor(ops, args, result["_waiting_status"])
        except SystemExit:
            print(op.log_tail(), file=sys.stderr)
            raise

    result.pop("_waiting_status", None)
    report(result)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
