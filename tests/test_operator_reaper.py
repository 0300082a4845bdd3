"""The reaper closes active rows whose FoundryRun is gone or has ended.

The stale rows come the way they do in production: a database backup taken
mid-run (pg_dump) restored after the runs moved on (pg_restore), against the
real PostgreSQL and API server. A restarted operator reaps them at start, and
the issues' next intakes make new attempts instead of attaching to dead runs.
Two reapers at once (two operator replicas) close each row once.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from kubernetes import client
from sqlalchemy.engine import make_url

from foundry.config import parse_config
from foundry.db import audit, claims, migrate
from foundry.db.engine import make_engine
from foundry.domain.naming import run_name
from foundry.operator import reaper
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from foundry.operator.locks import RunLocks
from foundry.operator.metrics import OperatorMetrics
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack, stack_config
from foundry.dev.postgres import find_bin_dir

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg(tool: str, *args: str) -> None:
    proc = subprocess.run([str(find_bin_dir() / tool), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{tool} failed ({proc.returncode}): {proc.stderr}"


def _reaper_events(engine, row_id: int) -> list[dict]:
    return [e.payload for e in audit.audit_events(engine, row_id)
            if e.kind == "phase" and (e.payload.get("detail") or {}).get("by") == "reaper"]


def _next_intake(engine, row) -> claims.Claim:
    return claims.claim_run(engine, tracker="linear", issue_id=row.issue_id, issue_key=row.issue_key,
                            namespace=row.namespace, ticket_updated_at=row.ticket_updated_at + timedelta(minutes=5),
                            name_for=lambda n: run_name("linear", row.issue_id, n))


def test_a_restored_mid_run_snapshot_is_reaped_at_start(control_plane, kube_client, crds, namespace, pg_url,
                                                        tmp_path: Path):
    engine = make_engine(pg_url)
    objects = client.CustomObjectsApi(kube_client)
    dump = tmp_path / "mid-run.dump"
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack:
            with operator_thread(stack.deps, namespace):
                issue_a, run_a = stack.ticket("Add a health endpoint to the service")
                issue_b, run_b = stack.ticket("Add a readiness endpoint to the service")
                wait_phase(kube_client, namespace, run_a, "WaitingApproval")
                wait_phase(kube_client, namespace, run_b, "WaitingApproval")
                _pg("pg_dump", "--format=custom", f"--file={dump}", _libpq(pg_url))
                # After the backup: A is rejected, B is deleted (its finalizer closes the row).
                stack.decide(run_a, "reject", "alice")
                wait_phase(kube_client, namespace, run_a, "Rejected")
                objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, run_b)
                wait_for(lambda: claims.get_run(engine, namespace, run_b).phase == "Stopped", 30,
                         what="B's row closed by its finalizer")
                wait_for(lambda: run_b not in [o["metadata"]["name"] for o in objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, RUNS)["items"]], 30, what="B to be gone")

            engine.dispose()
            _pg("pg_restore", "--clean", "--if-exists", "--single-transaction", f"--dbname={_libpq(pg_url)}",
                str(dump))
            # The restore brought back both rows as they were mid-run: each holds its issue's slot.
            for issue in (issue_a, issue_b):
                assert claims.active_run(engine, "linear", issue).phase == "WaitingApproval"

            config = stack_config()
            config["retention"] = {"reap_grace_seconds": 0}
            restarted = dataclasses.replace(stack.deps, api=control_plane.api_client(), config=parse_config(config),
                                            metrics=OperatorMetrics(), locks=RunLocks())
            with operator_thread(restarted, namespace):
                wait_for(lambda: all(claims.active_run(engine, "linear", i) is None for i in (issue_a, issue_b)),
                         60, what="the restored rows to be reaped at start")

        row_a = claims.get_run(engine, namespace, run_a)
        row_b = claims.get_run(engine, namespace, run_b)
        assert (row_a.phase, row_b.phase) == ("Rejected", "Stopped")
        assert row_a.finished_at is not None and row_b.finished_at is not None
        [event_a] = _reaper_events(engine, row_a.id)
        [event_b] = _reaper_events(engine, row_b.id)
        assert (event_a["from"], event_a["to"], event_a["reason"]) == ("WaitingApproval", "Rejected", "RunEnded")
        assert (event_b["from"], event_b["to"], event_b["reason"]) == ("WaitingApproval", "Stopped", "RunGone")
        assert audit.verify_audit_chain(engine, row_a.id) and audit.verify_audit_chain(engine, row_b.id)
        # A new intake for either issue starts a new attempt; nothing attaches to the dead runs.
        for row in (row_a, row_b):
            nxt = _next_intake(engine, row)
            assert (nxt.status, nxt.attempt) == ("created", 2), nxt
    finally:
        engine.dispose()


STALE = 40


def test_two_reapers_at_once_close_each_row_once(control_plane, kube_client, crds, namespace, pg_url):
    """Two replicas' reapers, each with its own engine and API client, started together on the
    same stale rows (real threads, real PostgreSQL row locks): every row closed once, audited once."""
    migrate.upgrade(pg_url)
    seed = make_engine(pg_url)
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    ids = []
    for n in range(STALE):
        claim = claims.claim_run(seed, tracker="linear", issue_id=f"gone-{n}", issue_key=f"ACME-{n + 1}",
                                 namespace=namespace, ticket_updated_at=t0, clock=lambda: t0,
                                 name_for=lambda a, n=n: f"gone-{n}-a{a}")
        ids.append(claim.run_id)
    # One whose run exists and is active is left alone.
    live = claims.claim_run(seed, tracker="linear", issue_id="live", issue_key="ACME-99", namespace=namespace,
                            ticket_updated_at=t0, clock=lambda: t0, name_for=lambda a: f"live-a{a}")
    client.CustomObjectsApi(kube_client).create_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FoundryRun", "metadata": {"name": live.name},
        "spec": {"tracker": "linear", "issueId": "live", "issueKey": "ACME-99", "attempt": 1}})

    config = parse_config(stack_config())
    replicas = []
    for _ in range(2):
        replicas.append(_bare_deps(control_plane.api_client(), make_engine(pg_url), config))
    start = threading.Barrier(len(replicas))
    reports: list[reaper.ReapReport] = []
    errors: list[BaseException] = []

    def replica(deps) -> None:
        try:
            start.wait(10)
            reports.append(reaper.reap(deps, grace=timedelta(minutes=5), batch_size=7, max_batches=20))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=replica, args=(d,)) for d in replicas]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        closed = [name for r in reports for _, name, _ in r.closed]
        assert sorted(closed) == sorted(f"gone-{n}-a1" for n in range(STALE)), closed  # each once, in total
        for run_id in ids:
            row = claims.get_run_by_id(seed, run_id)
            assert row.phase == "Stopped"
            assert len(_reaper_events(seed, run_id)) == 1
        assert claims.get_run_by_id(seed, live.run_id).phase == "Pending"
        # A second pass finds nothing left to do.
        again = reaper.reap(replicas[0], grace=timedelta(minutes=5), batch_size=7, max_batches=20)
        assert again.closed == [] and again.examined == 1
        # The live run was found in one paged list of its namespace, not read on its own.
        assert again.requests == 1
    finally:
        for d in replicas:
            d.engine.dispose()
        seed.dispose()


def _bare_deps(api, engine, config):
    from foundry.operator.deps import Deps

    return Deps(api=api, engine=engine, linear=None, github=None, config=config, agents=None)
