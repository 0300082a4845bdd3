"""Retention: deliveries pruned and finished FoundryRuns deleted by the operator's
housekeeping, in bounded batches, on query plans that never scan a whole table;
the database rows and audit trails outlive the objects. Real PostgreSQL and API
server; the plans are read with EXPLAIN."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from kubernetes import client
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from foundry.cli.main import cli
from foundry.config import parse_config
from foundry.db import audit, claims, migrate
from foundry.db.deliveries import prune_batch_query, prune_delete_statement
from foundry.db.engine import make_engine
from foundry.db.stale import active_page_query
from foundry.operator import housekeeping
from foundry.operator.deps import Deps
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from foundry.operator.retention import finished_rows_query
from tests.support.operator_stack import stack_config

pytestmark = [pytest.mark.postgres]

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAY = timedelta(days=1)


def _deps(engine, api=None, **retention) -> Deps:
    config = stack_config()
    config["retention"] = retention
    # Without a cluster the API client is never called (pruning is database work only).
    return Deps(api=api or client.ApiClient(), engine=engine, linear=None, github=None,
                config=parse_config(config), agents=None, clock=lambda: NOW)


def _plan(engine, statement) -> str:
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}")))


def _insert_runs(conn, first: int, count: int, *, namespace: str, phase: str, finished_at: datetime | None,
                 prefix: str = "old") -> None:
    conn.execute(text(
        "INSERT INTO foundry_runs (tracker, issue_id, issue_key, namespace, name, attempt, phase,"
        " ticket_updated_at, created_at, updated_at, finished_at)"
        " SELECT 'linear', :prefix || '-' || g, 'ACME-' || g, :ns, :prefix || '-' || g || '-a1', 1, :phase,"
        " :t, :t, coalesce(CAST(:f AS timestamptz), :t), CAST(:f AS timestamptz)"
        " FROM generate_series(CAST(:a AS integer), CAST(:b AS integer)) AS g"),
        {"prefix": prefix, "ns": namespace, "phase": phase, "t": NOW - 30 * DAY, "f": finished_at,
         "a": first, "b": first + count - 1})


def test_deliveries_are_pruned_in_bounded_batches_on_the_index(pg_url):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO foundry_webhook_deliveries (provider, delivery_id, received_at, outcome, applied_at)"
                " SELECT 'linear', 'old-' || g, :t - g * interval '1 second', 'created', :t"
                " FROM generate_series(1, 100000) AS g"), {"t": NOW - 10 * DAY})
            conn.execute(text(
                "INSERT INTO foundry_webhook_deliveries (provider, delivery_id, received_at, outcome, applied_at)"
                " SELECT 'github', 'new-' || g, :t - g * interval '1 second', 'created', :t"
                " FROM generate_series(1, 1000) AS g"), {"t": NOW})
            conn.execute(text("ANALYZE foundry_webhook_deliveries"))

        cutoff = NOW - 7 * DAY
        batch_plan = _plan(engine, prune_batch_query(cutoff, 1000))
        assert "Seq Scan" not in batch_plan, batch_plan
        assert "ix_foundry_webhook_deliveries_received_at" in batch_plan, batch_plan
        delete_plan = _plan(engine, prune_delete_statement(list(range(1, 1001))))
        assert "Seq Scan" not in delete_plan and "pk_foundry_webhook_deliveries" in delete_plan, delete_plan

        deps = _deps(engine, deliveries_seconds=7 * 86400, batch_size=1000, max_batches=20)
        rounds, seconds = [], []
        while True:
            started = time.monotonic()
            pruned = housekeeping.prune_once(deps)
            seconds.append(time.monotonic() - started)
            rounds.append(pruned)
            if not pruned:
                break
            assert len(rounds) < 10, rounds
        assert rounds == [20000] * 5 + [0], rounds  # each round stops at its 20 batches
        with engine.connect() as conn:
            left = conn.execute(text("SELECT provider, count(*) FROM foundry_webhook_deliveries GROUP BY provider"))
            assert dict(left.all()) == {"github": 1000}
        print(f"\n100,000 deliveries pruned in {len(rounds) - 1} rounds of 20 x 1000; "
              f"round seconds: {[round(s, 2) for s in seconds]}")
    finally:
        engine.dispose()


def test_the_run_lookups_use_indexes_on_a_large_history(pg_url):
    """With 200,000 finished rows and a handful of active ones, the reaper's page and the
    GC's finish-time lookup read indexes, not the table."""
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            _insert_runs(conn, 1, 200_000, namespace="ns", phase="Complete", finished_at=NOW - 10 * DAY)
            _insert_runs(conn, 1, 20, namespace="ns", phase="WaitingApproval", finished_at=None, prefix="live")
            conn.execute(text("ANALYZE foundry_runs"))
        reaper_plan = _plan(engine, active_page_query(NOW, ("linear", "live-5"), 500))
        assert "Seq Scan" not in reaper_plan and "uq_foundry_runs_one_active_per_issue" in reaper_plan, reaper_plan
        lookup_plan = _plan(engine, finished_rows_query("ns", [f"old-{n}-a1" for n in range(1, 501)]))
        assert "Seq Scan" not in lookup_plan and "uq_foundry_runs_namespace_name" in lookup_plan, lookup_plan
    finally:
        engine.dispose()


OLD, RECENT, ACTIVE = 2000, 20, 10


@pytest.mark.kube
@pytest.mark.slow
def test_finished_runs_are_deleted_in_bounded_batches_and_their_rows_stay(kube_client, crds, namespace, pg_url):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    objects = client.CustomObjectsApi(kube_client)
    try:
        with engine.begin() as conn:
            _insert_runs(conn, 1, OLD, namespace=namespace, phase="Complete", finished_at=NOW - 10 * DAY)
            _insert_runs(conn, 1, RECENT, namespace=namespace, phase="Stopped", finished_at=NOW - DAY, prefix="recent")
            _insert_runs(conn, 1, ACTIVE, namespace=namespace, phase="AgentRunning", finished_at=None, prefix="live")
        first = claims.get_run(engine, namespace, "old-1-a1")
        audit.record_decision(engine, first.id, "note", {"kept": "after the object goes"})

        def make(name: str, phase: str) -> None:
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FoundryRun", "metadata": {"name": name},
                "spec": {"tracker": "linear", "issueId": name.rsplit("-", 1)[0], "issueKey": "ACME-1",
                         "attempt": 1}})
            objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, RUNS, name,
                                                          {"status": {"phase": phase}})

        wanted = ([(f"old-{n}-a1", "Complete") for n in range(1, OLD + 1)]
                  + [(f"recent-{n}-a1", "Stopped") for n in range(1, RECENT + 1)]
                  + [(f"live-{n}-a1", "AgentRunning") for n in range(1, ACTIVE + 1)]
                  + [("dup-1-a1", "Duplicate")])  # no row, created just now: kept
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda w: make(*w), wanted))
        made = time.monotonic() - started

        deps = _deps(engine, kube_client, runs_seconds=7 * 86400, batch_size=200, max_batches=2)
        rounds, seconds = [], []
        while True:
            started = time.monotonic()
            deleted = housekeeping.collect_once(deps, [namespace])
            seconds.append(time.monotonic() - started)
            rounds.append(len(deleted))
            if not deleted:
                break
            assert all(name.startswith(f"{namespace}/old-") for name in deleted)
            assert len(rounds) < 10, rounds
        assert rounds == [400] * 5 + [0], rounds  # at most batch_size x max_batches per round

        left = sorted(o["metadata"]["name"] for o in
                      objects.list_namespaced_custom_object(GROUP, VERSION, namespace, RUNS)["items"])
        assert len(left) == RECENT + ACTIVE + 1 and not any(n.startswith("old-") for n in left)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM foundry_runs")).scalar_one() == OLD + RECENT + ACTIVE
        assert [e.kind for e in audit.audit_events(engine, first.id)] == ["note"]  # the trail outlives the object
        print(f"\n{len(wanted)} runs created in {made:.1f}s; {OLD} deleted in {len(rounds) - 1} rounds of 400; "
              f"round seconds: {[round(s, 2) for s in seconds]}")
    finally:
        engine.dispose()


@pytest.mark.kube
def test_runs_gc_cli_lists_then_deletes_only_what_is_due(kube_client, crds, control_plane, namespace, pg_url):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    objects = client.CustomObjectsApi(kube_client)
    try:
        with engine.begin() as conn:
            _insert_runs(conn, 1, 3, namespace=namespace, phase="Complete", finished_at=NOW - 3 * DAY)
            _insert_runs(conn, 1, 1, namespace=namespace, phase="Complete", finished_at=NOW - timedelta(hours=1),
                         prefix="fresh")
        for name in ("old-1-a1", "old-2-a1", "old-3-a1", "fresh-1-a1"):
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FoundryRun", "metadata": {"name": name},
                "spec": {"tracker": "linear", "issueId": name[:-3], "issueKey": "ACME-1", "attempt": 1}})
            objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, RUNS, name,
                                                          {"status": {"phase": "Complete"}})
        args = ["runs", "gc", "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace,
                "--database-url", pg_url, "--older-than", "2d"]
        runner = CliRunner()
        dry = runner.invoke(cli, args + ["--dry-run"], catch_exceptions=False)
        assert dry.exit_code == 0, dry.output
        assert sorted(line.split()[-1] for line in dry.stdout.splitlines()) == [
            f"{namespace}/old-{n}-a1" for n in (1, 2, 3)]
        assert len(objects.list_namespaced_custom_object(GROUP, VERSION, namespace, RUNS)["items"]) == 4

        real = runner.invoke(cli, args + ["--max", "2"], catch_exceptions=False)
        assert real.exit_code == 0 and "deleted 2 finished run(s)" in real.output, real.output
        rest = runner.invoke(cli, args, catch_exceptions=False)
        assert "deleted 1 finished run(s)" in rest.output, rest.output
        left = [o["metadata"]["name"] for o in objects.list_namespaced_custom_object(
            GROUP, VERSION, namespace, RUNS)["items"]]
        assert left == ["fresh-1-a1"]

        bad = runner.invoke(cli, args[:-1] + ["a week"])
        assert bad.exit_code == 2 and "not a duration" in bad.output
    finally:
        engine.dispose()
