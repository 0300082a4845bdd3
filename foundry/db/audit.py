"""Phase changes and decisions, each written with its audit event in one transaction."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from foundry.db.audit_chain import (ENV_KEY, GENESIS_HASH, AuditKeyError, ChainHead, ChainLink, ChainReport, Keyring,
                                    canonical_payload, check_chain, event_hash, head_mac, keyring_from_env)
from foundry.db.engine import session_factory
from foundry.db.models import AuditEvent, AuditHead, Run
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
    with _index_refusal(run, phase), session_factory(bind)() as session, session.begin():
        row = _locked_run(session, run)
        if phase.is_active and Phase(row.phase).is_terminal:
            raise RunEnded(run, row.phase, phase.value)
        return _move(session, row, phase, reason, detail, clock())


def advance_phase(
    bind: Bind,
    namespace: str,
    name: str,
    new_phase: Phase | str,
    reason: str,
    detail: Any = None,
    *,
    before_write: Callable[[], None] = lambda: None,
    clock: Clock = utcnow,
) -> RunRecord | None:
    """Move the run `namespace/name` to `new_phase` with its `phase` event, unless it is there
    already (a replay: nothing is written), in one transaction on the locked row: the check and
    the write cannot be split by another writer, and it costs one session instead of a read and
    then a locked write. Returns the row as written, None when nothing was (no row, or already
    there). `before_write` runs after the checks, just before the write (the operator's fence).
    Raises RunEnded when the row is terminal and `new_phase` is active."""
    phase = Phase(new_phase)
    run = (namespace, name)
    with _index_refusal(run, phase), session_factory(bind)() as session, session.begin():
        try:
            row = _locked_run(session, run)
        except RunNotFound:
            return None
        if row.phase != phase.value and phase.is_active and Phase(row.phase).is_terminal:
            raise RunEnded(run, row.phase, phase.value)
        if row.phase == phase.value:
            return None
        before_write()
        return _move(session, row, phase, reason, detail, clock())


@contextmanager
def _index_refusal(run: RunRef, phase: Phase) -> Iterator[None]:
    """The unique index on an issue's active run refusing the move, said as ActiveRunConflict."""
    try:
        yield
    except IntegrityError as exc:
        if phase.is_active:
            raise ActiveRunConflict(
                f"run {run!r} cannot enter {phase.value}: another run of its issue is active"
            ) from exc
        raise


def _move(session: Session, row: Run, phase: Phase, reason: str, detail: Any, now: datetime) -> RunRecord:
    previous = row.phase
    row.phase = phase.value
    row.updated_at = now
    if phase.is_terminal and row.finished_at is None:
        row.finished_at = now
    session.flush()  # the index check happens here, before the event is written
    append_event(session, row.id, "phase",
                 {"from": previous, "to": phase.value, "reason": reason, "detail": detail}, at=now)
    return RunRecord.of(row)


def close_if_unchanged(
    bind: Bind,
    run_id: int,
    seen_updated_at: datetime,
    phase: Phase | str,
    reason: str,
    detail: Any = None,
    *,
    clock: Clock = utcnow,
) -> RunRecord | None:
    """End an active row that nobody has touched since it was read (its updated_at
    is still `seen_updated_at`), with its `phase` audit event. None: it had moved
    or ended meanwhile, so this caller's verdict is stale and nothing is written.

    The row lock makes two callers with the same verdict (two operator
    replicas' reapers) close it once: the second finds it changed.
    """
    target = Phase(phase)
    if not target.is_terminal:
        raise ValueError(f"closing a row needs a terminal phase, not {target.value}")
    with session_factory(bind)() as session, session.begin():
        row = _locked_run(session, run_id)
        if Phase(row.phase).is_terminal or row.updated_at != seen_updated_at:
            return None
        previous, now = row.phase, clock()
        row.phase, row.updated_at = target.value, now
        if row.finished_at is None:
            row.finished_at = now
        append_event(session, row.id, "phase",
                     {"from": previous, "to": target.value, "reason": reason, "detail": detail}, at=now)
        return RunRecord.of(row)


def record_decision(bind: Bind, run: RunRef, kind: str, payload: Any, *, clock: Clock = utcnow) -> None:
    """Append a non-phase audit event (an approval seen, a policy verdict, …)."""
    with session_factory(bind)() as session, session.begin():
        row = _locked_run(session, run)
        append_event(session, row.id, kind, payload, at=clock())


def append_event(session: Session, run_id: int, kind: str, payload: Any, *, at: datetime,
                 keyring: Keyring | None = None) -> AuditEvent:
    """Append to the run's chain inside the caller's transaction.

    The caller must hold the run row locked (record_phase/record_decision do),
    so the "last event" read here cannot change before we insert; the unique
    (run_id, seq) would reject a second writer anyway. With an audit key
    ($FOUNDRY_AUDIT_KEY, or `keyring`) the link is an HMAC and the run's head
    record moves with it, in the same transaction.
    """
    if not kind:
        raise ValueError("an audit event needs a kind")
    key = (keyring if keyring is not None else keyring_from_env()).current
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
        hash=event_hash(prev, seq, kind, stored, at, key=key, run_id=run_id),
        key_id=key.key_id if key else None,
    )
    session.add(event)
    if key is not None:
        head = session.get(AuditHead, run_id) or AuditHead(run_id=run_id)
        head.count, head.last_hash, head.key_id = seq, event.hash, key.key_id
        head.mac = head_mac(key, run_id, seq, event.hash)
        session.add(head)
    session.flush()
    return event


def audit_events(bind: Bind, run_id: int) -> list[ChainLink]:
    with session_factory(bind)() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.run_id == run_id).order_by(AuditEvent.seq))
        return [_link(r) for r in rows]


def _link(r: AuditEvent) -> ChainLink:
    return ChainLink(r.seq, r.kind, r.payload, r.at, r.prev_hash, r.hash, r.key_id)


def audit_head(bind: Bind, run_id: int) -> ChainHead | None:
    with session_factory(bind)() as session:
        head = session.get(AuditHead, run_id)
        return ChainHead(head.count, head.last_hash, head.key_id, head.mac) if head else None


def audit_report(bind: Bind, run_id: int, keyring: Keyring | None = None) -> ChainReport:
    """Verify the run's events and its head record; the report names each problem
    (an altered or missing event, a cut-off tail, an event added without the key)."""
    ring = keyring if keyring is not None else keyring_from_env()
    with session_factory(bind)() as session, session.begin():
        # Appends hold the run row FOR UPDATE; a share lock here keeps one from
        # landing between reading the events and reading the head.
        session.execute(select(Run.id).where(Run.id == run_id).with_for_update(read=True))
        rows = session.scalars(select(AuditEvent).where(AuditEvent.run_id == run_id).order_by(AuditEvent.seq))
        links = [_link(r) for r in rows]
        head = session.get(AuditHead, run_id)
        chain_head = ChainHead(head.count, head.last_hash, head.key_id, head.mac) if head else None
    return check_chain(links, chain_head, ring, run_id)


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


def verify_audit_chain(bind: Bind, run_id: int, keyring: Keyring | None = None) -> bool:
    """True if the run's stored events form an unbroken chain that its head record
    (when it has one) vouches for. An empty trail is intact."""
    return audit_report(bind, run_id, keyring).intact


@dataclass
class SealReport:
    sealed: int = 0
    broken: list[int] = field(default_factory=list)  # run ids whose trail did not verify: left unsealed


def seal_unkeyed_trails(bind: Bind, keyring: Keyring | None = None, *, batch_size: int = 500) -> SealReport:
    """Give every run whose trail has no head record one, under the current key,
    after checking its (unkeyed) links: from then on a cut-off tail shows on
    those trails too. A trail that does not verify is reported, never sealed
    (sealing would bless the damage). Safe to run again and alongside the operator.
    """
    ring = keyring if keyring is not None else keyring_from_env()
    key = ring.current
    if key is None:
        raise AuditKeyError(f"sealing needs the audit key: set {ENV_KEY}")
    report, after = SealReport(), 0
    sessions = session_factory(bind)
    while True:
        with sessions() as session:
            ids = list(session.scalars(
                select(Run.id).outerjoin(AuditHead, AuditHead.run_id == Run.id)
                .where(AuditHead.run_id.is_(None), Run.id > after).order_by(Run.id).limit(batch_size)))
        for run_id in ids:
            with sessions() as session, session.begin():
                _locked_run(session, run_id)  # no append can land while we read and seal
                if session.get(AuditHead, run_id) is not None:
                    continue  # an append under the key sealed it meanwhile
                links = [_link(r) for r in session.scalars(
                    select(AuditEvent).where(AuditEvent.run_id == run_id).order_by(AuditEvent.seq))]
                if not links:
                    continue
                if not check_chain(links, None, ring, run_id).intact:
                    report.broken.append(run_id)
                    continue
                last = links[-1]
                session.add(AuditHead(run_id=run_id, count=last.seq, last_hash=last.hash, key_id=key.key_id,
                                      mac=head_mac(key, run_id, last.seq, last.hash)))
                report.sealed += 1
        if len(ids) < batch_size:
            return report
        after = ids[-1]


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
