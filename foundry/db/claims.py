"""Claiming the run for an issue: insert first, and let the unique index decide.

The product Foundry replaces checked for an active run in one session and
created it in another, so simultaneous deliveries each made a run. Here the
read only chooses the attempt number; who wins is decided by the INSERT against
`uq_foundry_runs_one_active_per_issue` (and the unique attempt number). A loser
gets IntegrityError, rolls back and reads the winner: it attaches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from foundry.db.engine import session_factory
from foundry.db.models import Run
from foundry.db.records import RunRecord
from foundry.db.timeutil import Clock, utcnow
from foundry.domain.attempts import ClaimAction, PriorRun, decide_claim
from foundry.domain.phases import ACTIVE_PHASE_NAMES, Phase

ClaimStatus = Literal["created", "attached", "unchanged"]
Bind = Engine | sessionmaker[Session]

# Each lost race means another caller committed a row we will see on the next
# read, so a handful of rounds is plenty; the bound only stops a pathological loop.
MAX_CLAIM_ROUNDS = 8


class RunNameTaken(RuntimeError):
    """name_for() produced a name that a run of another issue already holds."""


class ClaimContention(RuntimeError):
    """The claim kept losing races without ever seeing a winner (should not happen)."""


@dataclass(frozen=True)
class Claim:
    run_id: int
    name: str
    namespace: str
    attempt: int
    phase: str
    status: ClaimStatus


def claim_run(
    bind: Bind,
    *,
    tracker: str,
    issue_id: str,
    issue_key: str,
    namespace: str,
    ticket_updated_at: datetime,
    name_for: Callable[[int], str],
    clock: Clock = utcnow,
) -> Claim:
    """Create the issue's run, or attach to the active one, or report nothing to do.

    - a run is active → "attached" to it (whatever namespace it lives in);
    - none active and `ticket_updated_at` newer than the latest attempt's (or no
      attempt yet) → "created" with the next attempt number, phase Pending;
    - otherwise → "unchanged", returning the latest run; nothing is written.
    """
    _require_text(tracker=tracker, issue_id=issue_id, issue_key=issue_key, namespace=namespace)
    sessions = session_factory(bind)
    for _ in range(MAX_CLAIM_ROUNDS):
        with sessions() as session:
            try:
                with session.begin():
                    rows = _runs_of_issue(session, tracker, issue_id)
                    decision = decide_claim([_prior(r) for r in rows], ticket_updated_at)
                    if decision.action is ClaimAction.ATTACH:
                        return _claim(_by_attempt(rows, decision.attempt), "attached")
                    if decision.action is ClaimAction.UNCHANGED:
                        return _claim(_by_attempt(rows, decision.attempt), "unchanged")
                    now = clock()
                    row = Run(
                        tracker=tracker,
                        issue_id=issue_id,
                        issue_key=issue_key,
                        namespace=namespace,
                        name=name_for(decision.attempt),
                        attempt=decision.attempt,
                        phase=Phase.PENDING.value,
                        ticket_updated_at=ticket_updated_at,
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(row)
                    session.flush()
            except IntegrityError:
                # Usually someone else inserted this attempt or another active run
                # first: read again and follow what they did. A name held by a
                # different issue would never resolve, so say so instead.
                _refuse_foreign_name(session, namespace, row.name, tracker, issue_id)
                continue
            return _claim(row, "created")
    raise ClaimContention(
        f"claiming {tracker} issue {issue_id} lost {MAX_CLAIM_ROUNDS} races in a row without "
        "finding the winning run; is something deleting runs concurrently?"
    )


def get_run(bind: Bind, namespace: str, name: str) -> RunRecord | None:
    """The row of the FoundryRun `namespace/name`, or None."""
    with session_factory(bind)() as session:
        row = session.scalars(select(Run).where(Run.namespace == namespace, Run.name == name)).one_or_none()
        return RunRecord.of(row) if row else None


def get_run_by_id(bind: Bind, run_id: int) -> RunRecord | None:
    with session_factory(bind)() as session:
        row = session.get(Run, run_id)
        return RunRecord.of(row) if row else None


def active_run(bind: Bind, tracker: str, issue_id: str) -> RunRecord | None:
    """The issue's active run, if any (at most one can exist)."""
    with session_factory(bind)() as session:
        row = session.scalars(
            select(Run).where(Run.tracker == tracker, Run.issue_id == issue_id, Run.phase.in_(ACTIVE_PHASE_NAMES))
        ).one_or_none()
        return RunRecord.of(row) if row else None


def runs_of_issue(bind: Bind, tracker: str, issue_id: str) -> list[RunRecord]:
    """Every attempt of an issue, oldest first."""
    with session_factory(bind)() as session:
        return [RunRecord.of(r) for r in reversed(_runs_of_issue(session, tracker, issue_id))]


OperatorOutcome = Literal["inserted", "own", "duplicate"]


@dataclass(frozen=True)
class OperatorInsert:
    """What the operator learns when it records a FoundryRun it has just met.

    inserted: the row is new and this run holds the issue's active slot.
    own: a row with this namespace/name already exists (a restart, or a run the
         bridge claimed); `run` is that row.
    duplicate: another run of the issue is active, or already used this attempt
         number; `run` is that other run and this FoundryRun must end as Duplicate.
    """

    outcome: OperatorOutcome
    run: RunRecord


def insert_run_row_for_operator(
    bind: Bind,
    *,
    tracker: str,
    issue_id: str,
    issue_key: str,
    namespace: str,
    name: str,
    attempt: int,
    ticket_updated_at: datetime,
    phase: str = Phase.PENDING.value,
    clock: Clock = utcnow,
) -> OperatorInsert:
    """Insert first; on IntegrityError report which row stood in the way."""
    _require_text(tracker=tracker, issue_id=issue_id, issue_key=issue_key, namespace=namespace, name=name)
    Phase(phase)  # ValueError names the bad phase
    sessions = session_factory(bind)
    for _ in range(MAX_CLAIM_ROUNDS):
        now = clock()
        row = Run(
            tracker=tracker,
            issue_id=issue_id,
            issue_key=issue_key,
            namespace=namespace,
            name=name,
            attempt=attempt,
            phase=phase,
            ticket_updated_at=ticket_updated_at,
            created_at=now,
            updated_at=now,
        )
        with sessions() as session:
            try:
                with session.begin():
                    session.add(row)
                return OperatorInsert("inserted", RunRecord.of(row))
            except IntegrityError:
                pass
            with session.begin():
                same = session.scalars(select(Run).where(Run.namespace == namespace, Run.name == name)).one_or_none()
                if same is not None:
                    return OperatorInsert("own", RunRecord.of(same))
                rows = _runs_of_issue(session, tracker, issue_id)
                active = [r for r in rows if r.phase in ACTIVE_PHASE_NAMES]
                if active:
                    return OperatorInsert("duplicate", RunRecord.of(active[0]))
                taken = [r for r in rows if r.attempt == attempt]
                if taken:
                    return OperatorInsert("duplicate", RunRecord.of(taken[0]))
        # The conflicting row vanished between our insert and the read; try again.
    raise ClaimContention(f"recording run {namespace}/{name} kept conflicting with rows that then disappeared")


def _refuse_foreign_name(session: Session, namespace: str, name: str, tracker: str, issue_id: str) -> None:
    with session.begin():
        holder = session.scalars(select(Run).where(Run.namespace == namespace, Run.name == name)).one_or_none()
    if holder is not None and (holder.tracker, holder.issue_id) != (tracker, issue_id):
        raise RunNameTaken(
            f"run name {namespace}/{name} already belongs to {holder.tracker} issue {holder.issue_id} "
            f"(attempt {holder.attempt}); the naming function must be unique per issue and attempt"
        )


def _runs_of_issue(session: Session, tracker: str, issue_id: str) -> list[Run]:
    return list(
        session.scalars(
            select(Run).where(Run.tracker == tracker, Run.issue_id == issue_id).order_by(Run.attempt.desc())
        )
    )


def _prior(row: Run) -> PriorRun:
    return PriorRun(attempt=row.attempt, phase=row.phase, ticket_updated_at=row.ticket_updated_at)


def _by_attempt(rows: list[Run], attempt: int) -> Run:
    return next(r for r in rows if r.attempt == attempt)


def _claim(row: Run, status: ClaimStatus) -> Claim:
    return Claim(
        run_id=row.id, name=row.name, namespace=row.namespace, attempt=row.attempt, phase=row.phase, status=status
    )


def _require_text(**fields: str) -> None:
    empty = [k for k, v in fields.items() if not isinstance(v, str) or not v.strip()]
    if empty:
        raise ValueError(f"claim needs non-empty {', '.join(empty)}")
