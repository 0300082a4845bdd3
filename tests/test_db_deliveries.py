"""Durable webhook dedup: recorded with the command's success, pruned in batches."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from foundry.db import deliveries, migrate
from foundry.db.engine import create_schema, make_engine, session_factory
from foundry.db.models import WebhookDelivery

# The PostgreSQL variants carry the marker so `-m "not postgres"` leaves them out.
BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        migrate.upgrade(url)
        return url
    url = request.getfixturevalue("sqlite_url")
    eng = make_engine(url)
    create_schema(eng)
    eng.dispose()
    return url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    eng = make_engine(url)
    yield eng
    eng.dispose()


def _record(engine: Engine, provider: str, delivery_id: str, at: datetime, outcome: str = "created") -> bool:
    """What the bridge does once a delivery's command succeeded: record it in a short transaction."""
    with session_factory(engine)() as session, session.begin():
        return deliveries.record_delivery(session, provider=provider, delivery_id=delivery_id, received_at=at,
                                          outcome=outcome)


def _deliver(url: str, barrier: Any, results: Any) -> None:  # runs in a forked child
    engine = make_engine(url, pool_size=1)
    try:
        barrier.wait(timeout=30)
        with session_factory(engine)() as session, session.begin():
            new = deliveries.record_delivery(session, provider="linear", delivery_id="d-1", received_at=T0,
                                             outcome="created")
            time.sleep(0.05)  # keep the row uncommitted while the others arrive
        results.put("new" if new else "duplicate")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


@pytest.mark.slow
def test_the_same_delivery_from_eight_processes_is_new_exactly_once(url: str, engine: Engine) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_deliver, args=(url, barrier, results)) for _ in range(8)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["duplicate"] * 7 + ["new"]
    with engine.connect() as conn:
        rows = conn.execute(select(WebhookDelivery.outcome)).all()
    assert len(rows) == 1 and rows[0].outcome == "created"


def test_a_transaction_that_fails_leaves_the_delivery_unrecorded(engine: Engine) -> None:
    with pytest.raises(RuntimeError):
        with session_factory(engine)() as session, session.begin():
            assert deliveries.record_delivery(session, provider="github", delivery_id="g-1", received_at=T0)
            raise RuntimeError("the database went away before the commit")
    assert not deliveries.is_recorded(engine, "github", "g-1")
    # The sender's retry is recorded, once.
    assert _record(engine, "github", "g-1", T0, "hinted")
    assert deliveries.is_recorded(engine, "github", "g-1")
    assert not _record(engine, "github", "g-1", T0, "hinted")
    # Same id from another provider is a different delivery.
    assert not deliveries.is_recorded(engine, "linear", "g-1")


def test_record_delivery_inside_a_callers_transaction(engine: Engine) -> None:
    with session_factory(engine)() as session, session.begin():
        assert deliveries.record_delivery(session, provider="linear", delivery_id="x", received_at=T0, outcome="ok")
        assert not deliveries.record_delivery(session, provider="linear", delivery_id="x", received_at=T0)
        # The duplicate rolled back only its savepoint; the transaction goes on.
        assert deliveries.record_delivery(session, provider="linear", delivery_id="y", received_at=T0)
    assert deliveries.is_recorded(engine, "linear", "x") and deliveries.is_recorded(engine, "linear", "y")


def test_ttl_pruning_in_bounded_batches_with_a_fake_clock(engine: Engine) -> None:
    clock = FakeClock(T0)
    for n in range(10):  # ten deliveries an hour apart
        assert _record(engine, "linear", f"d{n}", clock())
        clock.advance(hours=1)
    # now = T0 + 10h; a 4.5h TTL keeps d6..d9 (received 6h..9h after T0)
    assert deliveries.prune_deliveries(engine, timedelta(hours=4.5), batch_size=2, clock=clock, max_batches=2) == 4
    assert deliveries.prune_deliveries(engine, timedelta(hours=4.5), batch_size=4, clock=clock) == 2
    assert deliveries.prune_deliveries(engine, timedelta(hours=4.5), batch_size=4, clock=clock) == 0
    with engine.connect() as conn:
        left = conn.execute(select(WebhookDelivery.delivery_id).order_by(WebhookDelivery.received_at)).scalars()
        assert list(left) == ["d6", "d7", "d8", "d9"]
    # A pruned id is forgotten: a very late replay counts as new (commands are idempotent).
    assert _record(engine, "linear", "d0", clock())
    clock.advance(days=30)
    assert deliveries.prune_deliveries(engine, timedelta(days=1), clock=clock) == 5


def test_prune_arguments_are_checked(engine: Engine) -> None:
    with pytest.raises(ValueError):
        deliveries.prune_deliveries(engine, timedelta(hours=1), batch_size=0)
    with pytest.raises(ValueError):
        deliveries.prune_deliveries(engine, timedelta(hours=-1))


def test_a_prune_batch_walks_the_received_at_index_on_postgres(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO foundry_webhook_deliveries (provider, delivery_id, received_at)"
                " SELECT 'linear', 'd' || g, now() - g * interval '1 second' FROM generate_series(1, 20000) g"
            ))
            conn.execute(text("ANALYZE foundry_webhook_deliveries"))
        # Half the table is past the cutoff: a scan would be the naive plan.
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=10000)
        statement = deliveries.prune_batch_query(cutoff, 500)
        with engine.connect() as conn:
            plan = _explain(conn, statement)
            ids = list(conn.execute(statement).scalars())
            delete_plan = _explain(conn, deliveries.prune_delete_statement(ids))
        assert len(ids) == 500
        assert "Index Scan using ix_foundry_webhook_deliveries_received_at" in plan, plan
        assert "Seq Scan" not in plan, plan
        assert "Seq Scan" not in delete_plan and "pk_foundry_webhook_deliveries" in delete_plan, delete_plan
    finally:
        engine.dispose()


def _explain(conn: Any, statement: Any) -> str:
    compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
    return "\n".join(conn.execute(text(f"EXPLAIN {compiled}")).scalars())
