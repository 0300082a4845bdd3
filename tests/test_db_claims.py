"""claim_run and the operator's insert, one caller at a time (semantics, not races)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, func, select

from foundry.db import audit, claims, migrate
from foundry.db.engine import create_schema, make_engine
from foundry.db.models import Run

# The PostgreSQL variants carry the marker so `-m "not postgres"` leaves them out.
BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    # PostgreSQL gets its schema from the migrations, SQLite from create_all:
    # the two ways the guard comes into being.
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        migrate.upgrade(url)
        eng = make_engine(url)
    else:
        eng = make_engine(request.getfixturevalue("sqlite_url"))
        create_schema(eng)
    yield eng
    eng.dispose()


def claim(engine: Engine, issue: str = "iss-1", at: datetime = T0, namespace: str = "ns") -> claims.Claim:
    return claims.claim_run(
        engine,
        tracker="linear",
        issue_id=issue,
        issue_key="ACME-1",
        namespace=namespace,
        ticket_updated_at=at,
        name_for=lambda attempt: f"{issue}-a{attempt}",
    )


def count_runs(engine: Engine, issue: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Run).where(Run.issue_id == issue)).scalar_one()


def test_created_then_attached_then_unchanged_then_next_attempt(engine: Engine) -> None:
    first = claim(engine)
    assert (first.status, first.attempt, first.name, first.phase) == ("created", 1, "iss-1-a1", "Pending")
    again = claim(engine, at=T0 + timedelta(hours=1), namespace="elsewhere")
    assert again.status == "attached" and again.run_id == first.run_id and again.namespace == "ns"

    audit.record_phase(engine, first.run_id, "Complete", "merged")
    same = claim(engine)
    assert (same.status, same.run_id, same.phase) == ("unchanged", first.run_id, "Complete")
    older = claim(engine, at=T0 - timedelta(days=1))
    assert older.status == "unchanged"
    assert count_runs(engine, "iss-1") == 1

    second = claim(engine, at=T0 + timedelta(seconds=1))
    assert (second.status, second.attempt, second.name) == ("created", 2, "iss-1-a2")
    assert second.run_id != first.run_id
    assert [r.attempt for r in claims.runs_of_issue(engine, "linear", "iss-1")] == [1, 2]
    assert claims.active_run(engine, "linear", "iss-1").id == second.run_id  # type: ignore[union-attr]


def test_times_round_trip_as_aware_utc(engine: Engine) -> None:
    plus_five = timezone(timedelta(hours=5))
    made = claim(engine, at=T0.astimezone(plus_five))
    row = claims.get_run(engine, "ns", made.name)
    assert row is not None and row.ticket_updated_at == T0 and row.ticket_updated_at.tzinfo == timezone.utc
    assert row.created_at.tzinfo is not None and row.finished_at is None


def test_a_name_owned_by_another_issue_is_reported(engine: Engine) -> None:
    claims.claim_run(engine, tracker="linear", issue_id="a", issue_key="A-1", namespace="ns",
                     ticket_updated_at=T0, name_for=lambda n: "shared")
    with pytest.raises(claims.RunNameTaken, match="ns/shared already belongs to linear issue a"):
        claims.claim_run(engine, tracker="linear", issue_id="b", issue_key="B-1", namespace="ns",
                         ticket_updated_at=T0, name_for=lambda n: "shared")


def test_bad_input_is_refused_before_touching_the_database(engine: Engine) -> None:
    with pytest.raises(ValueError, match="issue_id"):
        claims.claim_run(engine, tracker="linear", issue_id=" ", issue_key="A-1", namespace="ns",
                         ticket_updated_at=T0, name_for=str)
    with pytest.raises(ValueError, match="timezone"):
        claim(engine, at=datetime(2025, 1, 1))


def operator_insert(engine: Engine, name: str, issue: str = "iss-1", attempt: int = 1) -> claims.OperatorInsert:
    return claims.insert_run_row_for_operator(
        engine, tracker="linear", issue_id=issue, issue_key="ACME-1", namespace="ns", name=name,
        attempt=attempt, ticket_updated_at=T0,
    )


def test_operator_insert_outcomes(engine: Engine) -> None:
    mine = operator_insert(engine, "bridge-made")
    assert mine.outcome == "inserted"
    # The operator meets the same run again (restart): it is its own row.
    assert operator_insert(engine, "bridge-made") == claims.OperatorInsert("own", mine.run)
    # A run made by hand for the same issue while one is active: a duplicate of that one.
    foreign = operator_insert(engine, "by-hand", attempt=7)
    assert (foreign.outcome, foreign.run.id) == ("duplicate", mine.run.id)
    assert claims.get_run(engine, "ns", "by-hand") is None

    audit.record_phase(engine, mine.run.id, "Stopped", "human stop")
    # Nothing active now, but attempt 1 is taken by another name: still a duplicate.
    reused = operator_insert(engine, "by-hand", attempt=1)
    assert (reused.outcome, reused.run.id) == ("duplicate", mine.run.id)
    fresh = operator_insert(engine, "by-hand", attempt=2)
    assert fresh.outcome == "inserted" and fresh.run.attempt == 2


def test_claim_attaches_to_a_hand_made_active_run(engine: Engine) -> None:
    hand = operator_insert(engine, "by-hand", attempt=1)
    got = claim(engine, at=T0 + timedelta(days=1))
    assert (got.status, got.run_id, got.name) == ("attached", hand.run.id, "by-hand")
