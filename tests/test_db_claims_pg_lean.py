"""claim_run_pg and record_applied_delivery_pg: the ORM claim's answers, and its guard under real races.

Every scenario is run through both claim_run (the reference) and claim_run_pg on
twin issues and the answers compared; the races use real threads, each with its
own PostgreSQL connection, mixing both implementations in one storm.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from foundry.bridge.lean import libpq_conninfo
from foundry.db import audit, claims, deliveries, migrate
from foundry.db.engine import make_engine, normalise_url
from foundry.db.models import Run, WebhookDelivery
from foundry.domain.phases import ACTIVE_PHASE_NAMES

pytestmark = pytest.mark.postgres

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(pg_url: str) -> Iterator[tuple[Engine, str]]:
    migrate.upgrade(pg_url)  # the production schema: the guard as the migration creates it
    engine = make_engine(pg_url)
    yield engine, libpq_conninfo(normalise_url(pg_url))
    engine.dispose()


def lean_claim(conninfo: str, issue: str, at: datetime, namespace: str = "ns", name_for: Any = None) -> claims.Claim:
    async def go() -> claims.Claim:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            return await claims.claim_run_pg(conn, claims.ClaimRequest(
                tracker="linear",
                issue_id=issue,
                issue_key="ACME-1",
                namespace=namespace,
                ticket_updated_at=at,
                name_for=name_for or (lambda attempt: f"{issue}-a{attempt}"),
            ))

    return asyncio.run(go())


def orm_claim(engine: Engine, issue: str, at: datetime, namespace: str = "ns") -> claims.Claim:
    return claims.claim_run(
        engine,
        tracker="linear",
        issue_id=issue,
        issue_key="ACME-1",
        namespace=namespace,
        ticket_updated_at=at,
        name_for=lambda attempt: f"{issue}-a{attempt}",
    )


def comparable(c: claims.Claim, issue: str) -> tuple[Any, ...]:
    # Everything but the row id, with the issue's own prefix taken out of the name.
    return (c.status, c.attempt, c.phase, c.namespace, c.name.replace(issue, "<issue>"))


def test_same_answers_as_claim_run_through_a_runs_life(db: tuple[Engine, str]) -> None:
    engine, conninfo = db
    steps: list[tuple[str, datetime, str | None]] = [
        ("claim", T0, None),  # created 1
        ("claim", T0 + timedelta(hours=1), None),  # attached (active, even with a newer ticket)
        ("claim", T0, "elsewhere"),  # attached, in the run's own namespace
        ("finish", T0, None),
        ("claim", T0, None),  # unchanged: same revision
        ("claim", T0 - timedelta(days=1), None),  # unchanged: older revision
        ("claim", T0 + timedelta(seconds=1), None),  # created 2: newer revision
        ("claim", T0 + timedelta(seconds=2), None),  # attached to 2
        ("finish", T0, None),
        ("claim", T0 + timedelta(seconds=1), None),  # unchanged: not newer than attempt 2's
    ]
    answers: dict[str, list[tuple[Any, ...]]] = {"orm": [], "lean": []}
    for how, issue in (("orm", "twin-orm"), ("lean", "twin-lean")):
        last: claims.Claim | None = None
        for action, at, namespace in steps:
            if action == "finish":
                assert last is not None
                audit.record_phase(engine, last.run_id, "Complete", "merged")
                continue
            if how == "orm":
                last = orm_claim(engine, issue, at, namespace or "ns")
            else:
                last = lean_claim(conninfo, issue, at, namespace or "ns")
            answers[how].append(comparable(last, issue))
    assert answers["lean"] == answers["orm"]
    assert [a[0] for a in answers["lean"]] == [
        "created", "attached", "attached", "unchanged", "unchanged", "created", "attached", "unchanged"
    ]
    assert [r.attempt for r in claims.runs_of_issue(engine, "linear", "twin-lean")] == [1, 2]


def test_lean_claim_returns_the_row_it_made(db: tuple[Engine, str]) -> None:
    engine, conninfo = db
    made = lean_claim(conninfo, "iss-1", T0.astimezone(timezone(timedelta(hours=5))))
    row = claims.get_run_by_id(engine, made.run_id)
    assert row is not None and (row.name, row.attempt, row.phase) == ("iss-1-a1", 1, "Pending")
    assert row.ticket_updated_at == T0
    # The ORM path sees the lean row as the active run and attaches to it.
    assert orm_claim(engine, "iss-1", T0).run_id == made.run_id


def test_attaches_to_a_run_the_operator_recorded_by_hand(db: tuple[Engine, str]) -> None:
    engine, conninfo = db
    hand = claims.insert_run_row_for_operator(
        engine, tracker="linear", issue_id="iss-1", issue_key="ACME-1", namespace="ns", name="by-hand",
        attempt=3, ticket_updated_at=T0,
    )
    got = lean_claim(conninfo, "iss-1", T0 + timedelta(days=1))
    assert (got.status, got.run_id, got.name, got.attempt) == ("attached", hand.run.id, "by-hand", 3)


def test_a_name_owned_by_another_issue_is_reported(db: tuple[Engine, str]) -> None:
    _, conninfo = db
    lean_claim(conninfo, "a", T0, name_for=lambda n: "shared")
    with pytest.raises(claims.RunNameTaken, match="ns/shared already belongs to linear issue a"):
        lean_claim(conninfo, "b", T0, name_for=lambda n: "shared")


def test_bad_input_is_refused_before_touching_the_database(db: tuple[Engine, str]) -> None:
    _, conninfo = db
    with pytest.raises(ValueError, match="issue_id"):
        lean_claim(conninfo, " ", T0)
    with pytest.raises(ValueError, match="aware"):
        lean_claim(conninfo, "iss-1", datetime(2025, 1, 1))


def _storm(engine: Engine, conninfo: str, issue: str, at: datetime, lean: int, orm: int) -> list[claims.Claim]:
    """lean + orm callers, each on its own thread and connection, released together on a barrier."""
    barrier = threading.Barrier(lean + orm)
    results: list[claims.Claim] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def lean_caller() -> None:
        async def go() -> claims.Claim:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
                return await claims.claim_run_pg(conn, claims.ClaimRequest(
                    tracker="linear", issue_id=issue, issue_key="ACME-1", namespace="ns",
                    ticket_updated_at=at, name_for=lambda attempt: f"{issue}-a{attempt}",
                ))

        report(lambda: asyncio.run(go()))

    def orm_caller() -> None:
        def go() -> claims.Claim:
            with engine.connect():  # a pooled connection is open before the release, like the lean callers'
                pass
            barrier.wait()
            return orm_claim(engine, issue, at)

        report(go)

    def report(call: Any) -> None:
        try:
            outcome = call()
        except BaseException as exc:  # collected and re-raised in the test's thread
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=lean_caller) for _ in range(lean)]
    threads += [threading.Thread(target=orm_caller) for _ in range(orm)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert len(results) == lean + orm
    return results


@pytest.mark.slow
def test_mixed_storms_make_one_run_then_one_newer_attempt(pg_url: str, db: tuple[Engine, str]) -> None:
    engine, conninfo = db
    big = make_engine(pg_url, pool_size=16)  # the ORM callers' own pool, so none waits for a connection
    try:
        for round_ in range(6):
            issue = f"storm-{round_}"
            first = _storm(big, conninfo, issue, T0, lean=24, orm=8)
            assert sorted(c.status for c in first).count("created") == 1, [c.status for c in first]
            assert {c.status for c in first} == {"created", "attached"}
            assert len({c.run_id for c in first}) == 1

            audit.record_phase(engine, first[0].run_id, "ExecutionFailed", "test")
            again = _storm(big, conninfo, issue, T0 + timedelta(minutes=5), lean=24, orm=8)
            assert [c.status for c in again].count("created") == 1
            assert {(c.status, c.attempt) for c in again} == {("created", 2), ("attached", 2)}
            stale = _storm(big, conninfo, issue, T0, lean=8, orm=4)
            assert {c.status for c in stale} == {"attached"}  # attempt 2 is active

            with engine.connect() as connection:
                rows = connection.execute(select(Run.attempt, Run.phase).where(Run.issue_id == issue)).all()
            assert sorted(a for a, _ in rows) == [1, 2]
            assert sum(1 for _, phase in rows if phase in ACTIVE_PHASE_NAMES) == 1
    finally:
        big.dispose()


def test_record_applied_delivery_once_under_a_race(db: tuple[Engine, str]) -> None:
    engine, conninfo = db

    async def go() -> list[bool]:
        connections = [await psycopg.AsyncConnection.connect(conninfo, autocommit=True) for _ in range(16)]
        try:
            return list(
                await asyncio.gather(
                    *(
                        deliveries.record_applied_delivery_pg(c, provider="linear", delivery_id="d-1", outcome="created")
                        for c in connections
                    )
                )
            )
        finally:
            for c in connections:
                await c.close()

    fresh = asyncio.run(go())
    assert fresh.count(True) == 1 and fresh.count(False) == 15
    assert deliveries.is_recorded(engine, "linear", "d-1")
    assert not deliveries.is_recorded(engine, "github", "d-1")
    with engine.connect() as connection:
        outcome, applied = connection.execute(select(WebhookDelivery.outcome, WebhookDelivery.applied_at)).one()
        assert connection.execute(select(func.count()).select_from(WebhookDelivery)).scalar_one() == 1
    assert outcome == "created" and applied is not None and applied.tzinfo is not None
    with pytest.raises(ValueError, match="delivery id"):
        asyncio.run(_record_with_empty_id(conninfo))


async def _record_with_empty_id(conninfo: str) -> bool:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        return await deliveries.record_applied_delivery_pg(conn, provider="linear", delivery_id="", outcome="x")


def test_record_a_batch_says_which_deliveries_it_recorded(db: tuple[Engine, str]) -> None:
    engine, conninfo = db

    async def go(items: list[tuple[str, str, str]]) -> list[bool]:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            return await deliveries.record_applied_deliveries_pg(conn, items)

    assert asyncio.run(go([("linear", "d-1", "created")])) == [True]
    # Already recorded, new, the same id twice in one batch, and the same id from another provider.
    batch = [("linear", "d-1", "attached"), ("linear", "d-2", "attached"), ("linear", "d-2", "attached"),
             ("github", "d-1", "applied")]
    assert asyncio.run(go(batch)) == [False, True, False, True]
    with engine.connect() as connection:
        rows = set(connection.execute(select(WebhookDelivery.provider, WebhookDelivery.delivery_id,
                                             WebhookDelivery.outcome)).all())
    assert rows == {("linear", "d-1", "created"), ("linear", "d-2", "attached"), ("github", "d-1", "applied")}

    # All or nothing: a batch the database refuses records none of its deliveries.
    with pytest.raises(psycopg.errors.StringDataRightTruncation):
        asyncio.run(go([("linear", "d-3", "created"), ("linear", "x" * 500, "created")]))
    assert not deliveries.is_recorded(engine, "linear", "d-3")
