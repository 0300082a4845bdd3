"""Many callers claim the same issue at the same instant: one run, everyone gets its id.

Real threads and real processes against a real PostgreSQL server and a SQLite
file in WAL mode. Each round uses a fresh issue so every round is a first claim.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from foundry.db import audit, claims, migrate
from foundry.db.engine import create_schema, make_engine
from foundry.db.models import Run
from foundry.domain.phases import ACTIVE_PHASE_NAMES

# The PostgreSQL variants carry the marker so `-m "not postgres"` leaves them out.
BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]

ROUNDS = 20
THREADS = 32
PROCESSES = 8
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Outcome:
    round: int
    run_id: int | None
    status: str | None
    attempt: int | None
    error: str | None


def _prepared(request: pytest.FixtureRequest, backend: str) -> str:
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
        migrate.upgrade(url)
        return url
    url = request.getfixturevalue("sqlite_url")
    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    return url


def _claim_once(engine: Any, issue: str, at: datetime) -> claims.Claim:
    return claims.claim_run(
        engine, tracker="linear", issue_id=issue, issue_key="ACME-9", namespace="ns",
        ticket_updated_at=at, name_for=lambda attempt: f"{issue}-a{attempt}",
    )


def _count_collisions(engine: Any) -> list[int]:
    """Counts IntegrityErrors the engine saw: proof the callers really raced."""
    seen = [0]

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: Any) -> None:
        if isinstance(ctx.sqlalchemy_exception, IntegrityError):
            seen[0] += 1

    return seen


def _caller_loop(engine: Any, wait: Callable[[], Any], rounds: list[tuple[str, datetime]],
                 report: Callable[[Outcome], None]) -> None:
    for number, (issue, at) in enumerate(rounds):
        try:
            wait()
            got = _claim_once(engine, issue, at)
            report(Outcome(number, got.run_id, got.status, got.attempt, None))
        except BaseException as exc:  # counted as a failure by the test
            report(Outcome(number, None, None, None, f"{type(exc).__name__}: {exc}"))


def storm_threads(url: str, rounds: list[tuple[str, datetime]]) -> tuple[list[Outcome], int]:
    engine = make_engine(url, pool_size=THREADS)
    collisions = _count_collisions(engine)
    barrier = threading.Barrier(THREADS)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def report(o: Outcome) -> None:
        with lock:
            outcomes.append(o)

    threads = [
        threading.Thread(target=_caller_loop, args=(engine, lambda: barrier.wait(timeout=60), rounds, report))
        for _ in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    engine.dispose()
    return outcomes, collisions[0]


def _process_main(url: str, barrier: Any, rounds: list[tuple[str, datetime]], queue: Any) -> None:
    engine = make_engine(url, pool_size=1)
    collisions = _count_collisions(engine)
    _caller_loop(engine, lambda: barrier.wait(timeout=60), rounds, queue.put)
    engine.dispose()
    queue.put(("collisions", collisions[0]))


def storm_processes(url: str, rounds: list[tuple[str, datetime]]) -> tuple[list[Outcome], int]:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(url, barrier, rounds, queue)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes: list[Outcome] = []
    collisions = 0
    for _ in range(PROCESSES * (len(rounds) + 1)):
        item = queue.get(timeout=120)
        if isinstance(item, tuple):
            collisions += item[1]
        else:
            outcomes.append(item)
    for p in procs:
        p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    return outcomes, collisions


STORMS = {"threads": (storm_threads, THREADS), "processes": (storm_processes, PROCESSES)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_one_active_run_per_issue_under_a_storm(request: pytest.FixtureRequest, backend: str, mode: str) -> None:
    url = _prepared(request, backend)
    storm, callers = STORMS[mode]
    issues = [f"{mode}-{backend}-{n}" for n in range(ROUNDS)]

    outcomes, collisions = storm(url, [(issue, T0) for issue in issues])

    assert [o.error for o in outcomes if o.error] == []
    assert len(outcomes) == callers * ROUNDS
    for number in range(ROUNDS):
        this_round = [o for o in outcomes if o.round == number]
        assert len({o.run_id for o in this_round}) == 1, f"round {number} saw several runs"
        assert sorted(o.status for o in this_round) == ["attached"] * (callers - 1) + ["created"]
    if backend == "postgres":
        # SQLite's BEGIN IMMEDIATE queues writers, so only PostgreSQL reaches the index race.
        assert collisions > 0, "the callers never collided; the storm proved nothing"

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Run.issue_id, Run.phase).where(Run.issue_id.in_(issues))).all()
        assert sorted(r.issue_id for r in rows) == sorted(issues)  # exactly one row per issue
        assert all(r.phase in ACTIVE_PHASE_NAMES for r in rows)

        # The run ends. The same ticket revision, delivered again by everyone, claims nothing...
        first = next(o.run_id for o in outcomes if o.round == 0)
        assert first is not None
        audit.record_phase(engine, first, "NeedsClarification", "ticket too thin")
        again, _ = storm(url, [(issues[0], T0)])
        assert {(o.status, o.run_id) for o in again} == {("unchanged", first)}
        # ...and a newer revision creates exactly one attempt 2.
        newer, _ = storm(url, [(issues[0], T0 + timedelta(minutes=5))])
        assert [o.error for o in newer if o.error] == []
        assert sorted(o.status for o in newer) == ["attached"] * (callers - 1) + ["created"]
        assert {o.attempt for o in newer} == {2} and len({o.run_id for o in newer}) == 1
        with engine.connect() as conn:
            count = conn.execute(select(func.count()).where(Run.issue_id == issues[0])).scalar_one()
        assert count == 2
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_runs_racing_for_one_issue_leave_one_active(request: pytest.FixtureRequest, backend: str) -> None:
    """Different names and attempt numbers: only the partial unique index stands between them."""
    url = _prepared(request, backend)
    engine = make_engine(url, pool_size=THREADS)
    barrier = threading.Barrier(THREADS)
    results: list[Any] = []

    def insert(n: int) -> None:
        for rnd in range(5):
            try:
                barrier.wait(timeout=60)
                results.append((rnd, claims.insert_run_row_for_operator(
                    engine, tracker="linear", issue_id=f"hand-{rnd}", issue_key="ACME-7", namespace="ns",
                    name=f"hand-{rnd}-by-{n}", attempt=n + 1, ticket_updated_at=T0)))
            except BaseException as exc:
                results.append((rnd, exc))

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert [r for _, r in results if isinstance(r, BaseException)] == []
        for rnd in range(5):
            got = [r for n, r in results if n == rnd]
            winners = [r for r in got if r.outcome == "inserted"]
            assert len(winners) == 1 and len(got) == THREADS
            assert {(r.outcome, r.run.id) for r in got if r is not winners[0]} == {("duplicate", winners[0].run.id)}
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(Run)).scalar_one() == 5
    finally:
        engine.dispose()
