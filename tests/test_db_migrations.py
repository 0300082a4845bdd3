"""Alembic migrations: round trips, schema == models, the guard's predicate, safe concurrency."""

from __future__ import annotations

import importlib.util
import multiprocessing
import re
from datetime import datetime, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from foundry.cli.db import db as db_cli
from foundry.db import migrate
from foundry.db.engine import create_schema, make_engine
from foundry.db.models import ONE_ACTIVE_INDEX, metadata
from foundry.domain.phases import ACTIVE_PHASE_NAMES
from foundry.paths import REPO_ROOT

# The PostgreSQL variants carry the marker so `-m "not postgres"` leaves them out.
BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]

TABLES = {"foundry_runs", "foundry_audit_events", "foundry_webhook_deliveries", "foundry_audit_heads",
          "foundry_sweeps"}
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def any_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _insert_run(engine: Engine, issue_id: str, name: str, phase: str, attempt: int = 1) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO foundry_runs (tracker, issue_id, issue_key, namespace, name, attempt, phase,"
                " ticket_updated_at, created_at, updated_at) VALUES ('linear', :i, 'ACME-1', 'ns', :n, :a, :p,"
                " :t, :t, :t)"
            ),
            {"i": issue_id, "n": name, "a": attempt, "p": phase, "t": T0},
        )


def test_the_migration_freezes_the_same_active_phases_as_the_code() -> None:
    path = REPO_ROOT / "migrations" / "versions" / "0002_one_active_guard.py"
    spec = importlib.util.spec_from_file_location("guard_migration", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.ACTIVE_PHASES == ACTIVE_PHASE_NAMES


def test_upgrade_downgrade_upgrade_and_schema_equals_models(any_url: str) -> None:
    engine = make_engine(any_url)
    try:
        migrate.upgrade(any_url)
        assert _tables(engine) == TABLES
        migrate.downgrade(any_url, "base")
        assert _tables(engine) == set()
        assert migrate.current_revision(any_url) is None
        migrate.upgrade(any_url)
        assert migrate.current_revision(any_url) == migrate.head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_postgres_index_and_predicate_read_back_from_pg_indexes(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            indexdef = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE tablename = 'foundry_runs' AND indexname = :n"),
                {"n": ONE_ACTIVE_INDEX},
            ).scalar_one()
        assert indexdef.startswith(f"CREATE UNIQUE INDEX {ONE_ACTIVE_INDEX} ON public.foundry_runs")
        assert "(tracker, issue_id)" in indexdef
        where = indexdef.split(" WHERE ", 1)[1]
        assert where.startswith("((phase)::text = ANY (")
        assert tuple(re.findall(r"'(\w+)'::character varying", where)) == ACTIVE_PHASE_NAMES
        _assert_guard_enforced(engine)
    finally:
        engine.dispose()


def test_sqlite_create_all_and_migration_build_the_same_guard(tmp_path) -> None:
    sql = {}
    for how in ("create_all", "migrate"):
        url = f"sqlite:///{tmp_path / how}.db"
        if how == "migrate":
            migrate.upgrade(url)
        engine = make_engine(url)
        try:
            if how == "create_all":
                create_schema(engine)
            with engine.connect() as conn:
                sql[how] = conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"), {"n": ONE_ACTIVE_INDEX}
                ).scalar_one()
            _assert_guard_enforced(engine)
        finally:
            engine.dispose()
    assert sql["create_all"] == sql["migrate"]
    assert tuple(re.findall(r"'(\w+)'", sql["migrate"].split("WHERE", 1)[1])) == ACTIVE_PHASE_NAMES


def _assert_guard_enforced(engine: Engine) -> None:
    _insert_run(engine, "issue-1", "r1", "Complete", attempt=1)
    _insert_run(engine, "issue-1", "r2", "Pending", attempt=2)
    with pytest.raises(IntegrityError):
        _insert_run(engine, "issue-1", "r3", "ReviewRequired", attempt=3)
    _insert_run(engine, "issue-2", "r4", "AgentRunning")  # another issue is unaffected


def test_existing_duplicate_active_runs_stop_the_guard_with_a_list(any_url: str) -> None:
    migrate.upgrade(any_url, "0001_tables")
    engine = make_engine(any_url)
    try:
        _insert_run(engine, "dup-issue", "dup-a", "Pending", attempt=1)
        _insert_run(engine, "dup-issue", "dup-b", "AgentRunning", attempt=2)
        _insert_run(engine, "ok-issue", "ok-a", "Complete", attempt=1)
        _insert_run(engine, "ok-issue", "ok-b", "Pending", attempt=2)
    finally:
        engine.dispose()

    with pytest.raises(migrate.DuplicateActiveRuns) as caught:
        migrate.upgrade(any_url)
    assert [r.name for r in caught.value.rows] == ["dup-a", "dup-b"]

    result = CliRunner().invoke(db_cli, ["upgrade", "--database-url", any_url])
    assert result.exit_code == 1
    assert "already have more than one active run" in result.output
    assert "ns/dup-a, attempt 1, phase Pending" in result.output
    assert "ns/dup-b, attempt 2, phase AgentRunning" in result.output
    assert "ok-" not in result.output and "Traceback" not in result.output
    assert migrate.current_revision(any_url) == "0001_tables"


def _upgrade_after(barrier, url: str, results) -> None:  # runs in a forked child
    try:
        barrier.wait(timeout=30)
        migrate.upgrade(url)
        results.put("ok")
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_upgrades_on_postgres_are_serialised(pg_url: str) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_after, args=(barrier, pg_url, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["ok"] * 4
    assert migrate.current_revision(pg_url) == migrate.head_revision()


def test_cli_upgrade_current_downgrade(sqlite_url: str) -> None:
    runner = CliRunner()
    head = migrate.head_revision()
    assert "none (empty database" in runner.invoke(db_cli, ["current", "--database-url", sqlite_url]).output
    assert runner.invoke(db_cli, ["upgrade", "--database-url", sqlite_url]).exit_code == 0
    assert runner.invoke(db_cli, ["current", "--database-url", sqlite_url]).output.strip() == f"{head} (head)"
    down = runner.invoke(db_cli, ["downgrade", "0001_tables", "--database-url", sqlite_url])
    assert down.exit_code == 0 and "0001_tables" in down.output
    assert "behind head" in runner.invoke(db_cli, ["current", "--database-url", sqlite_url]).output
    bad = runner.invoke(db_cli, ["downgrade", "no-such-rev", "--database-url", sqlite_url])
    assert bad.exit_code == 1 and "no-such-rev" in bad.output and "Traceback" not in bad.output


def test_cli_explains_an_unreachable_database() -> None:
    result = CliRunner().invoke(db_cli, ["current", "--database-url", "postgresql://nobody@127.0.0.1:1/x"])
    assert result.exit_code == 1
    assert "cannot use the database at postgresql+psycopg://nobody@127.0.0.1:1/x" in result.output
