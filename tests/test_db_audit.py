"""Phase changes write the row and a hash-chained audit event together."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select, text, update

from foundry.db import audit, claims, migrate
from foundry.db.audit_chain import GENESIS_HASH, ChainLink, chain_is_intact, event_hash
from foundry.db.engine import create_schema, make_engine
from foundry.db.models import AuditEvent

# The PostgreSQL variants carry the marker so `-m "not postgres"` leaves them out.
BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        migrate.upgrade(url)
        eng = make_engine(url, pool_size=10)
    else:
        eng = make_engine(request.getfixturevalue("sqlite_url"), pool_size=10)
        create_schema(eng)
    yield eng
    eng.dispose()


def new_run(engine: Engine, issue: str = "iss-1") -> claims.Claim:
    return claims.claim_run(engine, tracker="linear", issue_id=issue, issue_key="ACME-1", namespace="ns",
                            ticket_updated_at=T0, name_for=lambda a: f"{issue}-a{a}")


def test_phase_changes_are_chained_and_verifiable(engine: Engine) -> None:
    run = new_run(engine)
    ticks = iter(T0 + timedelta(minutes=n) for n in range(1, 10))
    audit.record_phase(engine, run.run_id, "Analysing", "picked up", clock=lambda: next(ticks))
    audit.record_decision(engine, run.run_id, "risk", {"areas": ("auth",), "score": 0.5}, clock=lambda: next(ticks))
    row = audit.record_phase(engine, ("ns", run.name), "Blocked", "forbidden path", {"path": "secrets/"},
                             clock=lambda: next(ticks))
    assert row.phase == "Blocked" and row.finished_at == T0 + timedelta(minutes=3)

    events = audit.audit_events(engine, run.run_id)
    assert [(e.seq, e.kind) for e in events] == [(1, "phase"), (2, "risk"), (3, "phase")]
    assert events[0].payload == {"from": "Pending", "to": "Analysing", "reason": "picked up", "detail": None}
    assert events[1].payload == {"areas": ["auth"], "score": 0.5}
    assert events[0].prev_hash == GENESIS_HASH and events[1].prev_hash == events[0].hash
    assert events[2].hash == event_hash(events[1].hash, 3, "phase", events[2].payload, events[2].at)
    assert audit.verify_audit_chain(engine, run.run_id)


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE foundry_audit_events SET kind = 'approved' WHERE seq = 2",
        "UPDATE foundry_audit_events SET at = :later WHERE seq = 1",
        "DELETE FROM foundry_audit_events WHERE seq = 2",
        "UPDATE foundry_audit_events SET seq = seq + 10 WHERE seq = 3",
    ],
)
def test_tampering_breaks_the_chain(engine: Engine, tamper: str) -> None:
    run = new_run(engine)
    for phase in ("Analysing", "WaitingApproval", "Approved"):
        audit.record_phase(engine, run.run_id, phase, "step")
    assert audit.verify_audit_chain(engine, run.run_id)
    with engine.begin() as conn:
        conn.execute(text(tamper), {"later": T0 + timedelta(days=1)} if ":later" in tamper else {})
    assert not audit.verify_audit_chain(engine, run.run_id)


def test_payload_tampering_is_detected(engine: Engine) -> None:
    run = new_run(engine)
    audit.record_phase(engine, run.run_id, "Analysing", "picked up", {"by": "operator-0"})
    with engine.begin() as conn:
        conn.execute(update(AuditEvent).values(payload={"from": "Pending", "to": "Analysing", "reason": "x"}))
    assert not audit.verify_audit_chain(engine, run.run_id)


def test_concurrent_appends_keep_one_unbroken_chain(engine: Engine) -> None:
    run = new_run(engine)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def append(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(5):
                audit.record_decision(engine, run.run_id, "note", {"writer": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    events = audit.audit_events(engine, run.run_id)
    assert [e.seq for e in events] == list(range(1, 41))
    assert audit.verify_audit_chain(engine, run.run_id)


def test_the_row_and_its_event_commit_together(engine: Engine) -> None:
    first = new_run(engine, "iss-1")
    audit.record_phase(engine, first.run_id, "Stopped", "human stop")
    second = claims.claim_run(engine, tracker="linear", issue_id="iss-1", issue_key="ACME-1", namespace="ns",
                             ticket_updated_at=T0 + timedelta(hours=1), name_for=lambda a: f"iss-1-a{a}")
    # Reviving attempt 1 while attempt 2 is active must fail and leave no event behind
    # (a terminal row is refused before the index would be asked).
    with pytest.raises(audit.RunEnded):
        audit.record_phase(engine, first.run_id, "Analysing", "revive")
    assert claims.get_run_by_id(engine, first.run_id).phase == "Stopped"  # type: ignore[union-attr]
    with engine.connect() as conn:
        kinds = conn.execute(select(AuditEvent.payload).where(AuditEvent.run_id == first.run_id)).scalars().all()
    assert [k["to"] for k in kinds] == ["Stopped"]
    assert second.attempt == 2


def test_unknown_runs_and_phases_are_refused(engine: Engine) -> None:
    with pytest.raises(audit.RunNotFound):
        audit.record_phase(engine, 424242, "Analysing", "x")
    run = new_run(engine)
    with pytest.raises(ValueError, match="Bogus"):
        audit.record_phase(engine, run.run_id, "Bogus", "x")
    with pytest.raises((TypeError, ValueError)):
        audit.record_decision(engine, run.run_id, "note", {"not json": object()})
    assert audit.verify_audit_chain(engine, run.run_id)  # empty trail: nothing written


def test_chain_check_is_pure() -> None:
    h1 = event_hash(GENESIS_HASH, 1, "phase", {"to": "Analysing"}, T0)
    link = ChainLink(1, "phase", {"to": "Analysing"}, T0, GENESIS_HASH, h1)
    assert chain_is_intact([link]) and chain_is_intact([])
    assert not chain_is_intact([ChainLink(1, "phase", {"to": "Approved"}, T0, GENESIS_HASH, h1)])
    assert not chain_is_intact([ChainLink(2, "phase", {"to": "Analysing"}, T0, GENESIS_HASH, h1)])


def test_advance_phase_checks_and_writes_on_the_locked_row(engine: Engine) -> None:
    run = new_run(engine)
    fenced: list[str] = []
    # No row: nothing written, the fence never asked (the Duplicate outcome has no row).
    assert audit.advance_phase(engine, "ns", "no-such-run", "Analysing", "Claimed",
                               before_write=lambda: fenced.append("x")) is None
    row = audit.advance_phase(engine, "ns", run.name, "Analysing", "Claimed", {"message": "m"},
                              before_write=lambda: fenced.append("Analysing"), clock=lambda: T0)
    assert row is not None and row.phase == "Analysing" and fenced == ["Analysing"]
    # A replay: the row is there already, so no second event and no fence.
    assert audit.advance_phase(engine, "ns", run.name, "Analysing", "Claimed",
                               before_write=lambda: fenced.append("again")) is None
    assert fenced == ["Analysing"]
    # The fence refusing (a lost Lease) writes nothing.
    def lost() -> None:
        raise RuntimeError("not leading")
    with pytest.raises(RuntimeError):
        audit.advance_phase(engine, "ns", run.name, "WaitingApproval", "Planned", before_write=lost)
    assert claims.get_run(engine, "ns", run.name).phase == "Analysing"
    # A terminal row never becomes active again.
    audit.advance_phase(engine, "ns", run.name, "Blocked", "NoRepository")
    with pytest.raises(audit.RunEnded):
        audit.advance_phase(engine, "ns", run.name, "WaitingApproval", "Planned")
    kinds = [(e.kind, e.payload["to"]) for e in audit.audit_events(engine, run.run_id) if e.kind == "phase"]
    assert kinds[-2:] == [("phase", "Analysing"), ("phase", "Blocked")]
    assert audit.verify_audit_chain(engine, run.run_id)
