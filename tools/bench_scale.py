#!/usr/bin/env python3
"""The operator with many active runs: RSS, startup, resync lag and CPU floor at 0 / 1k / 5k / 10k runs.

    .venv/bin/python tools/bench_scale.py                      # 0 and 1,000 runs, under 2 minutes
    .venv/bin/python tools/bench_scale.py --runs 10000         # 0, 1k, 5k, 10k
    .venv/bin/python tools/bench_scale.py --levels 0,2000 --resync-seconds 60 --json

Starts (or reuses, --kubeconfig / --database-url) a kube-apiserver + etcd and a
PostgreSQL, and the local Linear and GitHub servers in this process. Then:

1. templates: one `foundry operator` drives two real tickets through the
   product path in a template namespace, one to WaitingApproval and one to
   PROpen (its agent's commit pushed, its PR opened, CI green, its Job done);
2. seeding: each level's runs are created directly, in batches and
   concurrently, in the bench namespace, as an operator that already handled
   them would have left them: the database row in the template's phase with
   the template's audit trail (re-chained for the new row), the FoundryRun with
   the finalizer and kopf's diff base, its status a copy of the template's
   (names, uid and PR rewritten), and for PROpen a branch and an open PR in
   the GitHub stand-in at the template's head. A share of the runs is PROpen
   (--pr-open-share, polled every resync period), the rest WaitingApproval
   (woken only for their expiry);
3. per level, the operator (`foundry operator -n NS`, a separate process,
   Deps from the environment as deployed) is started on the seeded namespace
   and measured: time to its first reconcile and until every run has been
   reconciled once (from /metrics), VmRSS once its CPU has gone quiet, and
   over --lag-periods resync periods its CPU (the steady-state floor, CPU
   seconds per minute) and the resync lag; then it is killed and the next
   level is seeded on top.

Resync lag: each PROpen re-read writes status.lastSyncedAt; a watch in this
process timestamps every such write, and a run's lag is how much later than
one resync period after its previous re-read (or the operator's start) the
next one came, for the re-reads in the steady window (after the startup has
settled). A run whose next re-read had not come by the end of the window
counts with the lag it had reached then (a lower bound). If the operator exports a lag histogram
(`foundry_operator_resync_lag_seconds`, else the work queue's
`foundry_queue_lag_seconds`), its p50/p99 are printed too.

The resync period is shortened by config (--resync-seconds, default 30 s;
production default 60 s) so several periods fit in a few minutes; the output
says which period was used.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

# tests.support (the harnesses) is importable from the repository root only.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kopf  # noqa: E402
from kubernetes import client, watch  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from bench_operator import Operator, cpu_seconds, phases, rss_mib, scrape_metrics, wait_quiet, wait_until  # noqa: E402
from foundry.db.audit_chain import GENESIS_HASH, canonical_payload, event_hash  # noqa: E402
from foundry.db.models import AuditEvent, Run  # noqa: E402
from foundry.domain.naming import run_name  # noqa: E402
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest  # noqa: E402
from foundry.domain.naming import RUN_FINALIZER as FINALIZER  # noqa: E402
from foundry.operator.handlers import ANNOTATION_PREFIX  # noqa: E402
from foundry.operator.kubeio import GROUP, RUNS, VERSION  # noqa: E402
from tests.support.benchenv import bench_servers  # noqa: E402
from tests.support.operator_stack import READY_DESCRIPTION, REPO, TEAM, OperatorStack, stack_config  # noqa: E402

LAG_METRICS = ("foundry_operator_resync_lag_seconds", "foundry_queue_lag_seconds")
HEALTH = {"app/health.py": "def healthz():\n    return 'ok'\n"}
STANDARD_LEVELS = (0, 1000, 5000, 10000)
ROOT = Path(__file__).resolve().parents[1]


def make_templates(stack: OperatorStack, kubeconfig: str, database_url: str, workdir: Path,
                   cfg: dict[str, Any], tree: Path) -> dict[str, dict[str, Any]]:
    """One run in WaitingApproval and one in PROpen, made by a real operator; their bodies by phase."""
    fast = {**cfg, "timeouts": {**cfg["timeouts"], "resync_seconds": 1}}
    op = Operator(stack, kubeconfig, database_url, workdir, fast, 4, tree)
    try:
        op.wait_metrics(timeout=120.0)
        _, waiting = stack.ticket()
        _, opened = stack.ticket()
        wait_until(stack.api, stack.namespace, lambda p: p["WaitingApproval"] == 2, what="the templates",
                   timeout=90, alive=op.check_alive)
        stack.decide(opened)
        wait_until(stack.api, stack.namespace, lambda p: p["AgentRunning"] == 1, what="the PROpen template",
                   timeout=90, alive=op.check_alive)
        sha = stack.push(opened, HEALTH)
        stack.open_pr(opened)
        stack.ci(sha, "success")
        stack.finish_job(f"{opened}-a1")
        wait_until(stack.api, stack.namespace, lambda p: p["PROpen"] == 1, what="the PROpen template",
                   timeout=90, alive=op.check_alive)
    except SystemExit:
        print(op.log_tail(), file=sys.stderr)
        raise
    finally:
        op.stop(kill=True)
    return {"WaitingApproval": stack.run(waiting), "PROpen": stack.run(opened)}


def template_events(engine: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    meta = body["metadata"]
    with engine.connect() as conn:
        run_id = conn.execute(select(Run.id).where(Run.namespace == meta["namespace"],
                                                   Run.name == meta["name"])).scalar_one()
        rows = conn.execute(select(AuditEvent.kind, AuditEvent.payload, AuditEvent.key_id)
                            .where(AuditEvent.run_id == run_id).order_by(AuditEvent.seq)).all()
    if any(r.key_id for r in rows):
        raise SystemExit("the template's audit trail is keyed; unset FOUNDRY_AUDIT_KEY for the benchmark")
    return [{"kind": r.kind, "payload": r.payload} for r in rows]


# ---- seeding ------------------------------------------------------------------------------

@dataclasses.dataclass
class Seeder:
    """Creates runs in the bench namespace as copies of the templates (see the module doc)."""

    stack: OperatorStack  # bound to the bench namespace
    engine: Any
    templates: dict[str, dict[str, Any]]
    events: dict[str, list[dict[str, Any]]]
    concurrency: int
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: {"WaitingApproval": 0, "PROpen": 0})
    spent: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per seeding stage

    def _took(self, stage: str, since: float) -> float:
        now = time.monotonic()
        self.spent[stage] = round(self.spent.get(stage, 0.0) + now - since, 1)
        return now

    def __post_init__(self) -> None:
        self.diffbase = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
        self.pr_branch = self.templates["PROpen"]["status"]["pr"]["branch"]
        # The writes go through their own client with a connection per thread: the default pool
        # (5 per CPU, 10 here) made the other threads open and drop connections (a TLS handshake
        # each) instead of reusing them.
        config = copy.deepcopy(self.stack.api.configuration)
        config.connection_pool_maxsize = max(self.concurrency, 10)
        self.writer = client.CustomObjectsApi(client.ApiClient(config))

    def seed(self, waiting: int, pr_open: int) -> float:
        """Add `waiting` WaitingApproval and `pr_open` PROpen runs; returns the seconds taken."""
        started = time.monotonic()
        todo = ["PROpen"] * pr_open + ["WaitingApproval"] * waiting
        for first in range(0, len(todo), 1000):
            self._batch(todo[first:first + 1000])
        return time.monotonic() - started

    def _batch(self, phase_of: list[str]) -> None:
        linear, ns = self.stack.linear, self.stack.namespace
        clock = time.monotonic()
        tickets = []
        for phase in phase_of:
            issue_id = linear.create_issue(TEAM, "Add a health endpoint to the service", READY_DESCRIPTION,
                                           labels=["foundry"], actor_id=self.stack.alice_id)
            issue = linear.issue_json(issue_id)
            tickets.append((phase, issue_id, issue["identifier"],
                            datetime.fromisoformat(issue["updatedAt"].replace("Z", "+00:00"))))
        names = [run_name("linear", issue_id, 1) for _, issue_id, _, _ in tickets]
        clock = self._took("linear issues", clock)
        # The database row first, as the bridge's claim comes before the create.
        now = datetime.now().astimezone()
        with self.engine.begin() as conn:
            ids = dict(conn.execute(insert(Run).returning(Run.name, Run.id), [
                {"tracker": "linear", "issue_id": issue_id, "issue_key": key, "namespace": ns, "name": name,
                 "attempt": 1, "phase": phase, "ticket_updated_at": updated, "created_at": now, "updated_at": now}
                for (phase, issue_id, key, updated), name in zip(tickets, names)]).all())
        clock = self._took("database rows", clock)
        prs = {name: self._open_pr(name) for (phase, *_), name in zip(tickets, names) if phase == "PROpen"}
        clock = self._took("GitHub branches and PRs", clock)
        with ThreadPoolExecutor(self.concurrency) as pool:
            uids = list(pool.map(lambda args: self._create(*args, pr=prs.get(args[4])),
                                 [(*t, n) for t, n in zip(tickets, names)]))
        clock = self._took("FoundryRun creates and status writes", clock)
        events = []
        for (phase, *_), name, uid in zip(tickets, names, uids):
            events.extend(self._trail(phase, ids[name], name, uid, now))
        with self.engine.begin() as conn:
            conn.execute(insert(AuditEvent), events)
        self._took("audit trails", clock)
        for phase, *_ in tickets:
            self.counts[phase] += 1

    def _open_pr(self, name: str) -> int:
        github = self.stack.github
        github.create_branch(REPO, f"foundry/{name}", from_branch=self.pr_branch)
        return github.open_pr(REPO, f"foundry/{name}", f"{name}: work")

    def _create(self, phase: str, issue_id: str, key: str, updated: datetime, name: str, *,
                pr: int | None) -> str:
        snapshot = TicketSnapshot(tracker="linear", issue_id=issue_id, issue_key=key,
                                  title="Add a health endpoint to the service", description=READY_DESCRIPTION,
                                  labels=("foundry",), team_key=TEAM, updated_at=updated)
        manifest = build_run_manifest(snapshot, 1, Trigger(source="webhook", delivery_id=str(uuid.uuid4())),
                                      namespace=self.stack.namespace)
        meta = manifest["metadata"]
        meta["finalizers"] = [FINALIZER]
        # kopf's diff base, as kopf writes it after handling: the operator meets
        # a run it already knows (a restart), not a new one.
        patch = kopf.Patch()
        self.diffbase.store(body=kopf.Body(manifest), patch=patch,
                            essence=self.diffbase.build(body=kopf.Body(manifest)))
        meta.setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        # Two writes per run (the status subresource ignores a status in the create), their
        # answers read raw: only the uid is wanted, not the client's model of the object.
        created = self.writer.create_namespaced_custom_object(GROUP, VERSION, self.stack.namespace, RUNS, manifest,
                                                              _preload_content=False)
        uid = json.loads(created.data)["metadata"]["uid"]  # read before the connection serves the next request
        self.writer.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.stack.namespace, RUNS, name, {"status": self._status(phase, name, pr)},
            _content_type="application/merge-patch+json", _preload_content=False).data
        return uid

    def _status(self, phase: str, name: str, pr: int | None) -> dict[str, Any]:
        template = self.templates[phase]
        text = json.dumps(template["status"])
        text = text.replace(template["metadata"]["name"], name)
        text = text.replace(template["metadata"]["namespace"], self.stack.namespace)
        status = json.loads(text)
        if pr is not None:
            old = template["status"]["pr"]["number"]
            status["pr"]["number"] = pr
            status["pr"]["url"] = re.sub(rf"/pull/{old}$", f"/pull/{pr}", status["pr"]["url"])
            status["message"] = str(status.get("message", "")).replace(f"#{old}", f"#{pr}")
        return status

    def _trail(self, phase: str, run_id: int, name: str, uid: str, at: datetime) -> Iterator[dict[str, Any]]:
        template = self.templates[phase]["metadata"]
        prev = GENESIS_HASH
        for seq, event in enumerate(self.events[phase], start=1):
            text = json.dumps(event["payload"]).replace(template["name"], name).replace(template["uid"], uid)
            payload = canonical_payload(json.loads(text))
            digest = event_hash(prev, seq, event["kind"], payload, at)
            yield {"run_id": run_id, "seq": seq, "kind": event["kind"], "payload": payload, "at": at,
                   "prev_hash": prev, "hash": digest, "key_id": None}
            prev = digest


# ---- watching the re-reads ------------------------------------------------------------------

class SyncWatch:
    """Timestamps every change of status.lastSyncedAt in the namespace (a watch in a thread)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.syncs: dict[str, list[float]] = {}
        self._seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._watch = watch.Watch()
        listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, RUNS, limit=1)
        self._rv = listed["metadata"]["resourceVersion"]
        # What the runs show now (the seeded copies' stamps are the template's): a change is a re-read.
        for item in self._all():
            self._seen[item["metadata"]["name"]] = (item.get("status") or {}).get("lastSyncedAt") or ""
        self._thread = threading.Thread(target=self._loop, name="sync-watch", daemon=True)
        self._thread.start()

    def _all(self) -> Iterator[dict[str, Any]]:
        custom, token = client.CustomObjectsApi(self.api), None
        while True:
            page = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, RUNS, limit=2000,
                                                        _continue=token)
            yield from page["items"]
            token = page["metadata"].get("continue")
            if not token:
                return

    def _loop(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            try:
                for event in self._watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION,
                                                self.namespace, RUNS, resource_version=self._rv,
                                                timeout_seconds=60, allow_watch_bookmarks=True,
                                                _request_timeout=(10, 90)):
                    obj = event["object"]
                    self._rv = obj["metadata"]["resourceVersion"]
                    if event["type"] not in ("ADDED", "MODIFIED"):
                        continue
                    name = obj["metadata"]["name"]
                    stamp = (obj.get("status") or {}).get("lastSyncedAt") or ""
                    if stamp and stamp != self._seen.get(name):
                        self._seen[name] = stamp
                        self.syncs.setdefault(name, []).append(time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception as err:  # noqa: BLE001 - a dropped watch is resumed; a lost one shows as no syncs
                print(f"(sync watch restarted: {err})", file=sys.stderr)
                time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()

    def lags(self, names: list[str], period: float, started: float, since: float, until: float) -> list[float]:
        """How late each re-read in [since, until] came against one period after the run's previous
        one (or after `started`, the operator's start, for its first); and for each run whose next
        re-read was still to come at `until`, the lateness it had reached by then (a lower bound)."""
        out: list[float] = []
        for name in names:
            times = [started] + [t for t in self.syncs.get(name, []) if started <= t <= until]
            out.extend(b - a - period for a, b in zip(times, times[1:]) if b >= since)
            overdue = until - times[-1] - period
            if overdue > 0:
                out.append(overdue)
        return out


# ---- reading the operator -----------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def lag_buckets(port: int) -> tuple[str, list[tuple[float, float]]] | None:
    """The operator's lag histogram (cumulative buckets), if it exports one: the resync lag, else
    the work queue's pickup lag (every due item, events included)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    except OSError:
        return None
    for metric in LAG_METRICS:
        buckets = sorted((float("inf") if b == "+Inf" else float(b), float(line.split()[-1]))
                         for line in text.splitlines() if line.startswith(f"{metric}_bucket")
                         for b in [line.split('le="', 1)[1].split('"', 1)[0]])
        if buckets:
            return metric, buckets
    return None


def lag_between(before: tuple[str, list] | None, after: tuple[str, list] | None) -> dict[str, Any] | None:
    """p50/p99 (bucket upper bounds) of what the histogram observed between two scrapes."""
    if before is None or after is None or before[0] != after[0]:
        return None
    diff = [(b, c1 - c0) for (b, c1), (_, c0) in zip(after[1], before[1])]
    total = diff[-1][1] if diff else 0
    if total <= 0:
        return None
    return {"name": after[0], "count": total,
            **{f"p{int(q * 100)}": next(b for b, c in diff if c >= q * total) for q in (0.5, 0.99)}}


def wait_for(check: Callable[[], bool], *, timeout: float, interval: float, alive: Callable[[], None]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        if check():
            return True
        time.sleep(interval)
    return False


def measure_level(stack: OperatorStack, seeder: Seeder, kubeconfig: str, database_url: str, workdir: Path,
                  cfg: dict[str, Any], args: argparse.Namespace, tree: Path) -> dict[str, Any]:
    runs = sum(seeder.counts.values())
    period = float(args.resync_seconds)
    sync_watch = SyncWatch(stack.api, stack.namespace) if seeder.counts["PROpen"] else None
    probe = _probe_version(stack) if runs else None
    started = time.monotonic()
    op = Operator(stack, kubeconfig, database_url, workdir, cfg, args.workers, tree)
    out: dict[str, Any] = {"runs": runs, "waiting": seeder.counts["WaitingApproval"],
                           "pr_open": seeder.counts["PROpen"]}
    try:
        op.wait_metrics(timeout=args.timeout)
        out["metrics_up_seconds"] = round(time.monotonic() - started, 2)

        def reconciles() -> float:
            # A busy operator's metrics thread can be slow to answer: a late scrape is not a failure.
            try:
                return scrape_metrics(op.metrics_port).get("reconciles", 0.0)
            except OSError:
                return -1.0

        if runs:
            if wait_for(lambda: reconciles() >= 1, timeout=args.timeout, interval=0.1, alive=op.check_alive):
                out["first_reconcile_seconds"] = round(time.monotonic() - started, 2)
            if wait_for(lambda: reconciles() >= runs, timeout=args.timeout, interval=0.5, alive=op.check_alive):
                out["all_reconciled_seconds"] = round(time.monotonic() - started, 1)
        # Settled: under --quiet-busy plus what the PROpen polling costs once steady (about 9 ms
        # of CPU per re-read at 5,000 runs here; twice that allowed). A fixed 5% never came at
        # 10,000 runs (1,000 PROpen re-read every 30 s keep a third of a core busy), so the
        # wait ran into --timeout.
        busy = args.quiet_busy + 0.02 * seeder.counts["PROpen"] / period
        out["quiet_after_seconds"] = round(wait_quiet(op.pid, busy=busy, timeout=args.timeout), 1)
        out["settled_seconds"] = round(time.monotonic() - started, 1)
        out["rss_mib"], out["hwm_mib"] = (round(v, 1) for v in rss_mib(op.pid))
        if probe is not None:
            out["seeded_run_patched_at_start"] = _probe_version(stack) != probe

        # The steady state: CPU and re-reads over whole resync periods.
        window = period * args.lag_periods if runs else args.floor_seconds
        cpu0, t0 = cpu_seconds(op.pid), time.monotonic()
        rec0 = reconciles()
        hist0 = lag_buckets(op.metrics_port)
        time.sleep(window)
        op.check_alive()
        cpu1, t1 = cpu_seconds(op.pid), time.monotonic()
        out["window_seconds"] = round(t1 - t0, 1)
        out["cpu_s_per_min"] = round((cpu1 - cpu0) * 60 / (t1 - t0), 2)
        rec1 = reconciles()
        out["reconciles_per_s"] = round((rec1 - rec0) / (t1 - t0), 2) if min(rec0, rec1) >= 0 else None
        out["rss_after_window_mib"] = round(rss_mib(op.pid)[0], 1)
        if sync_watch is not None:
            names = [n for n, _ in _pr_open_names(stack)]
            lags = sync_watch.lags(names, period, started, t0, t1)
            out["lag"] = {"samples": len(lags), "p50": _r(percentile(lags, 0.5)), "p99": _r(percentile(lags, 0.99)),
                          "max": _r(max(lags) if lags else None),
                          "runs_not_resynced_in_window": sum(1 for n in names if not any(
                              t0 <= t <= t1 for t in sync_watch.syncs.get(n, [])))}
        out["lag_metric"] = lag_between(hist0, lag_buckets(op.metrics_port))
    finally:
        if sync_watch is not None:
            sync_watch.stop()
        op.stop(kill=True)
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _pr_open_names(stack: OperatorStack) -> list[tuple[str, str]]:
    custom, token, out = client.CustomObjectsApi(stack.api), None, []
    while True:
        page = custom.list_namespaced_custom_object(GROUP, VERSION, stack.namespace, RUNS, limit=2000,
                                                    _continue=token)
        out += [(i["metadata"]["name"], "PROpen") for i in page["items"]
                if (i.get("status") or {}).get("phase") == "PROpen"]
        token = page["metadata"].get("continue")
        if not token:
            return out


def _probe_version(stack: OperatorStack) -> str | None:
    """The resourceVersion of one seeded WaitingApproval run (did the operator's start write to it?)."""
    page = client.CustomObjectsApi(stack.api).list_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, RUNS, limit=50)
    for item in page["items"]:
        if (item.get("status") or {}).get("phase") == "WaitingApproval":
            return f'{item["metadata"]["name"]}@{item["metadata"]["resourceVersion"]}'
    return None


# ---- the benchmark ----------------------------------------------------------------------------

def levels_of(args: argparse.Namespace) -> list[int]:
    if args.levels:
        levels = sorted({int(x) for x in args.levels.split(",")})
    else:
        levels = sorted({n for n in STANDARD_LEVELS if n <= args.runs} | {0, args.runs})
    if levels[0] < 0:
        raise SystemExit("levels must be at least 0")
    return levels


def report(result: dict[str, Any]) -> None:
    print(f"\nmachine: {result['cpus']} CPUs shared with other work (load average at the start of each level "
          f"in the JSON; {result['load']} at the end); one operator at a time (--workers {result['workers']}); "
          f"resync period {result['resync_seconds']:.0f} s (shortened by config for the benchmark; production "
          f"default 60 s); PROpen share {result['pr_open_share']:.0%}; steady window "
          f"{result['lag_periods']:g} periods")
    print("| operator | active runs (WA / PROpen) | first reconcile | all reconciled | settled | RSS (HWM) MiB "
          "| CPU s/min steady | reconciles/s | lag p50 / p99 / max (samples) | lag metric p50 / p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for lv in result["levels"]:
        lag = lv.get("lag") or {}
        metric = lv.get("lag_metric") or {}
        lag_text = (f"{lag['p50']} / {lag['p99']} / {lag['max']} s ({lag['samples']})" if lag.get("samples")
                    else "—")
        metric_text = f"≤{metric['p50']} / ≤{metric['p99']} s" if metric else "—"
        print(f"| {lv['operator']} | {lv['runs']} ({lv['waiting']} / {lv['pr_open']}) "
              f"| {lv.get('first_reconcile_seconds', '—')} s | {lv.get('all_reconciled_seconds', '—')} s "
              f"| {lv['settled_seconds']} s | {lv['rss_mib']:.0f} ({lv['hwm_mib']:.0f}) "
              f"| {lv['cpu_s_per_min']} | {lv['reconciles_per_s']} | {lag_text} | {metric_text} |")
    print("seeding: " + "; ".join(f"{lv['runs']} runs in {lv['seed_seconds']:.0f} s" for lv in result["levels"]
                                  if lv.get("seed_seconds")) + f" ({result['seed_stages']})")
    labels = list(dict.fromkeys(lv["operator"] for lv in result["levels"]))
    empty = {lv["operator"]: lv for lv in result["levels"] if lv["runs"] == 0}
    for lv in result["levels"]:
        base = empty.get(lv["operator"])
        if lv["runs"] and base:
            print(f"{lv['operator']}, {lv['runs']} runs: RSS {lv['rss_mib'] / base['rss_mib']:.2f}× its empty "
                  f"start, {(lv['rss_mib'] - base['rss_mib']) * 1024 / lv['runs']:.0f} KiB per run")
        if (lv.get("lag") or {}).get("p99") is not None:
            period = result["resync_seconds"]
            print(f"{lv['operator']}, {lv['runs']} runs: one re-read to the next at p99 "
                  f"{(lv['lag']['p99'] + period) / period:.2f}× the period (target < 2×); "
                  f"{lv['lag']['runs_not_resynced_in_window']} PROpen runs not re-read in the window")
    if len(labels) == 2:
        before, after = labels
        by = {(lv["operator"], lv["runs"]): lv for lv in result["levels"]}
        for runs in sorted({lv["runs"] for lv in result["levels"]}):
            a, b = by.get((before, runs)), by.get((after, runs))
            if a and b:
                print(f"{runs} runs, {after} / {before}: RSS {b['rss_mib'] / a['rss_mib']:.2f}, steady CPU "
                      f"{b['cpu_s_per_min'] / max(a['cpu_s_per_min'], 0.01):.2f}")


def parse_operators(values: list[str] | None) -> list[tuple[str, Path]]:
    """--operator LABEL=TREE (a checkout or an unpacked `git archive`); default: this checkout."""
    if not values:
        return [("checkout", ROOT)]
    out = []
    for value in values:
        label, sep, tree = value.partition("=")
        path = Path(tree).resolve()
        if not sep or not (path / "foundry" / "cli" / "main.py").is_file():
            raise SystemExit(f"--operator wants LABEL=TREE with TREE/foundry/cli/main.py, got {value!r}")
        out.append((label, path))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="cluster to use (default: a throwaway local control plane)")
    parser.add_argument("--database-url", help="PostgreSQL to use (default: a throwaway server)")
    parser.add_argument("--runs", type=int, default=1000, help="the largest level; levels 0/1k/5k/10k up to it")
    parser.add_argument("--levels", help="comma-separated active-run counts to measure at (overrides --runs)")
    parser.add_argument("--operator", action="append", metavar="LABEL=TREE",
                        help="an operator to measure, from another tree (repeat to compare; each level "
                             "measures each in turn on the same runs); default: this checkout")
    parser.add_argument("--pr-open-share", type=float, default=0.1, help="share of the runs in PROpen (polled)")
    parser.add_argument("--resync-seconds", type=int, default=30, help="the operator's resync period here")
    parser.add_argument("--lag-periods", type=float, default=2.0, help="resync periods measured per level")
    parser.add_argument("--floor-seconds", type=float, default=20.0, help="CPU window with no runs")
    parser.add_argument("--quiet-busy", type=float, default=0.05,
                        help="settled: the operator under this share of a core over 3 s "
                        "(plus 20 ms per PROpen re-read due each second)")
    parser.add_argument("--workers", type=int, default=16, help="the operator's --workers")
    parser.add_argument("--concurrency", type=int, default=16, help="threads creating runs")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a level's startup may take")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    levels = levels_of(args)
    operators = parse_operators(args.operator)

    with ExitStack() as stack:
        servers = bench_servers(stack, prefix="foundry-bench-scale-", kubeconfig=args.kubeconfig,
                                database_url=args.database_url, pool_size=args.concurrency + 2)
        workdir, kubeconfig, database_url = servers.workdir, servers.kubeconfig, servers.database_url
        engine, api = servers.engine, servers.api
        core = client.CoreV1Api(api)
        suffix = uuid.uuid4().hex[:8]
        template_ns, bench_ns = f"foundry-scale-tpl-{suffix}", f"foundry-scale-{suffix}"
        for ns in (template_ns, bench_ns):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            stack.callback(core.delete_namespace, ns)

        cfg = stack_config()
        cfg["timeouts"] = {**cfg["timeouts"], "resync_seconds": args.resync_seconds, "pr_wait_seconds": 1800}
        ops = stack.enter_context(OperatorStack.open(api, engine, template_ns, cfg))
        print("templates: two runs through a real operator...", file=sys.stderr)
        templates = make_templates(ops, kubeconfig, database_url, workdir / "templates", cfg, operators[0][1])
        bench_stack = dataclasses.replace(ops, namespace=bench_ns)
        seeder = Seeder(bench_stack, engine, templates,
                        {p: template_events(engine, b) for p, b in templates.items()}, args.concurrency)
        result: dict[str, Any] = {"cpus": os.cpu_count(), "workers": args.workers,
                                  "resync_seconds": args.resync_seconds, "pr_open_share": args.pr_open_share,
                                  "lag_periods": args.lag_periods, "operators": [l for l, _ in operators],
                                  "levels": []}
        for number, level in enumerate(levels):
            more = level - sum(seeder.counts.values())
            pr_more = max(0, round(level * args.pr_open_share) - seeder.counts["PROpen"])
            print(f"level {level}: seeding {more} runs ({pr_more} PROpen)...", file=sys.stderr)
            seed_seconds = seeder.seed(more - pr_more, pr_more) if more else 0.0
            if level:
                seen = phases(api, bench_ns)
                if sum(seen.values()) != level:
                    raise SystemExit(f"seeded {sum(seen.values())} runs, wanted {level}: {dict(seen)}")
            for label, tree in operators:
                print(f"level {level}: measuring the {label} operator...", file=sys.stderr)
                load = " ".join(f"{x:.1f}" for x in os.getloadavg())
                measured = measure_level(bench_stack, seeder, kubeconfig, database_url,
                                         workdir / f"level-{number}-{label}", cfg, args, tree)
                measured.update(operator=label, seed_seconds=round(seed_seconds, 1), load_at_start=load)
                result["levels"].append(measured)
                print(json.dumps(measured), file=sys.stderr)
        result["seed_stages"] = ", ".join(f"{k} {v:.0f} s" for k, v in seeder.spent.items())
        result["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    report(result)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
