"""Phase changes and decisions, each written with its audit event in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from foundry.db.audit_chain import GENESIS_HASH, ChainLink, canonical_payload, chain_is_intact, event_hash
from foundry.db.engine import session_factory
from foundry.db.models import AuditEvent, Run
from foundry.db.records import RunRecord
from foundry.db.timeutil import Clock, utcnow
from foundry.domain.phases import Phase

Bind = Engine | sessionmaker[Session]
RunRef = int | tuple[str, str]  # run id, or (namespace, name)


class RunNotFound(LookupError):
    pass


class ActiveRunConflict(RuntimeError):
    """Moving this run to an active phase would make a second active run for its issue."""


class RunEnded(RuntimeError):
    """The run's row is already terminal; it never becomes active again.

    A terminal row has given up the issue's slot, and another attempt may hold
    it by now, so reviving the row would either fail on the index for ever or
    make a second active run. `phase` is the row's terminal phase, which the
    caller's view of the run must follow.
    """

    def __init__(self, run: RunRef, phase: str, wanted: str) -> None:
        super().__init__(f"run {run!r} is {phase} (terminal); refusing to move it back to {wanted}")
        self.phase = phase
        self.wanted = wanted


def record_phase(
    bind: Bind,
    run: RunRef,
    new_phase: Phase | str,
    reason: str,
    detail: Any = None,
    *,
    clock: Clock = utcnow,
) -> RunRecord:
    """Set the run's phase and append a `phase` audit event, atomically.

    Entering a terminal phase stamps finished_at (once). Returns the updated row.
    Raises RunEnded when the row is terminal and `new_phase` is active.
    """
    phase = Phase(new_phase)  # ValueError: '<x>' is not a valid Phase
    sessions = session_factory(bind)
    try:
        with sessions() as session, session.begin():
            row = _locked_run(session, run)
            previous = row.phase
            if phase.is_active and Phase(previous).is_terminal:
                raise RunEnded(run, previous, phase.value)
            now = clock()
            row.phase = phase.value
            row.updated_at = now
            if phase.is_terminal and row.finished_at is None:
                row.finished_at = now
            session.flush()  # the index check happens here, before the event is written
            append_event(
                session,
                row.id,
                "phase",
                {"from": previous, "to": phase.value, "reason": reason, "detail": detail},
                at=now,
            )
            return RunRecord.of(row)
    except IntegrityError as exc:
        if phase.is_active:
            raise ActiveRunConflict(
                f"run {run!r} cannot enter {phase.value}: another run of its issue is active"
            ) from exc
        raise


def record_decision(bind: Bind, run: RunRef, kind: str, payload: Any, *, clock: Clock = utcnow) -> None:
    """Append a non-phase audit event (an approval seen, a policy verdict, …)."""
    with session_factory(bind)() as session, session.begin():
        row = _locked_run(session, run)
        append_event(session, row.id, kind, payload, at=clock())


def append_event(session: Session, run_id: int, kind: str, payload: Any, *, at: datetime) -> AuditEvent:
    """Append to the run's chain inside the caller's transaction.

    The caller must hold the run row locked (record_phase/record_decision do),
    so the "last event" read here cannot change before we insert; the unique
    (run_id, seq) would reject a second writer anyway.
    """
    if not kind:
        raise ValueError("an audit event needs a kind")
    stored = canonical_payload(payload)
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash)
        .where(AuditEvent.run_id == run_id)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS_HASH)
    event = AuditEvent(
        run_id=run_id,
        seq=seq,
        kind=kind,
        payload=stored,
        at=at,
        prev_hash=prev,
        hash=event_hash(prev, seq, kind, stored, at),
    )
    session.add(event)
    session.flush()
    return event


def audit_events(bind: Bind, run_id: int) -> list[ChainLink]:
    with session_factory(bind)() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.run_id == run_id).order_by(AuditEvent.seq))
        return [ChainLink(r.seq, r.kind, r.payload, r.at, r.prev_hash, r.hash) for r in rows]


def last_phase_event(bind: Bind, run_id: int) -> ChainLink | None:
    """The run's latest `phase` event (what moved the row to where it is), or None."""
    with session_factory(bind)() as session:
        r = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.run_id == run_id, AuditEvent.kind == "phase")
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        ).first()
        return ChainLink(r.seq, r.kind, r.payload, r.at, r.prev_hash, r.hash) if r else None


def verify_audit_chain(bind: Bind, run_id: int) -> bool:
    """True if the run's stored events form an unbroken chain (an empty trail is intact)."""
    return chain_is_intact(audit_events(bind, run_id))


def _locked_run(session: Session, run: RunRef) -> Run:
    query = select(Run).with_for_update()  # row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises
    if isinstance(run, int):
        query = query.where(Run.id == run)
    else:
        namespace, name = run
        query = query.where(Run.namespace == namespace, Run.name == name)
    row = session.scalars(query).one_or_none()
    if row is None:
        raise RunNotFound(f"no run {run!r} in the database")
    return row
