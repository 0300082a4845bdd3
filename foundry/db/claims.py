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
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from foundry.db.engine import session_factory
from foundry.db.models import Run
from foundry.db.records import RunRecord
from foundry.db.timeutil import Clock, utcnow
from foundry.domain.attempts import ClaimAction, PriorRun, decide_claim
from foundry.domain.phases import ACTIVE_PHASE_NAMES, Phase

if TYPE_CHECKING:  # psycopg is only needed by callers of the lean PostgreSQL path
    from psycopg import AsyncConnection

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


# ---------------------------------------------------------------- lean PostgreSQL claim
#
# The same decision as claim_run, for a hot path that cannot afford the ORM: plain
# psycopg statements in autocommit, so a claim for a new issue is one round trip.
# The guard is unchanged: the INSERT runs against the partial unique index and the
# unique (tracker, issue_id, attempt) and (namespace, name); ON CONFLICT DO NOTHING
# turns a lost race into "no row returned" instead of an exception, and the loser
# reads the winner in a fresh statement (a fresh snapshot) and follows it.

_RUN_COLUMNS = "id, name, namespace, attempt, phase, ticket_updated_at"
_INSERT_RUN = (
    "INSERT INTO foundry_runs (tracker, issue_id, issue_key, namespace, name, attempt, phase,"
    " ticket_updated_at, created_at, updated_at)"
    # Casts: a parameter used in both the select list and the WHERE must have one type.
    " SELECT %(tracker)s::varchar, %(issue_id)s::varchar, %(issue_key)s::varchar, %(namespace)s::varchar,"
    " %(name)s::varchar, %(attempt)s::integer, %(phase)s::varchar,"
    " %(ticket_updated_at)s::timestamptz, %(now)s::timestamptz, %(now)s::timestamptz"
)
# Attempt 1 is right exactly when the issue has no rows at all (decide_claim([]) is CREATE 1),
# so the first claim of an issue needs no read before its insert.
_INSERT_FIRST_RUN = (
    _INSERT_RUN
    + " WHERE NOT EXISTS (SELECT 1 FROM foundry_runs WHERE tracker = %(tracker)s AND issue_id = %(issue_id)s)"
    + " ON CONFLICT DO NOTHING RETURNING id"
)
_INSERT_NEXT_RUN = _INSERT_RUN + " ON CONFLICT DO NOTHING RETURNING id"
_SELECT_RUNS = (
    f"SELECT {_RUN_COLUMNS} FROM foundry_runs WHERE tracker = %(tracker)s AND issue_id = %(issue_id)s"
    " ORDER BY attempt DESC"
)
_SELECT_NAME_HOLDER = "SELECT tracker, issue_id, attempt FROM foundry_runs WHERE namespace = %s AND name = %s"


async def claim_run_pg(
    conn: "AsyncConnection[Any]",
    *,
    tracker: str,
    issue_id: str,
    issue_key: str,
    namespace: str,
    ticket_updated_at: datetime,
    name_for: Callable[[int], str],
    clock: Clock = utcnow,
) -> Claim:
    """claim_run on PostgreSQL through an autocommit psycopg AsyncConnection: same rules, same answers.

    One round trip when the issue has never had a run; otherwise read, decide
    (decide_claim), insert-or-nothing, as many rounds as races are lost (bounded).
    """
    _require_text(tracker=tracker, issue_id=issue_id, issue_key=issue_key, namespace=namespace)
    _require_aware_time(ticket_updated_at)
    params: dict[str, Any] = {
        "tracker": tracker,
        "issue_id": issue_id,
        "issue_key": issue_key,
        "namespace": namespace,
        "phase": Phase.PENDING.value,
        "ticket_updated_at": ticket_updated_at,
    }
    attempt, optimistic = 1, True
    for _ in range(MAX_CLAIM_ROUNDS):
        if not optimistic:
            cursor = await conn.execute(_SELECT_RUNS, params)
            rows = [_LeanRow(*r) for r in await cursor.fetchall()]
            decision = decide_claim([r.prior() for r in rows], ticket_updated_at)
            if decision.action is ClaimAction.ATTACH:
                return _by_attempt_lean(rows, decision.attempt).claim("attached")
            if decision.action is ClaimAction.UNCHANGED:
                return _by_attempt_lean(rows, decision.attempt).claim("unchanged")
            attempt = decision.attempt
        name = name_for(attempt)
        now = clock()
        cursor = await conn.execute(
            _INSERT_FIRST_RUN if optimistic else _INSERT_NEXT_RUN,
            {**params, "name": name, "attempt": attempt, "now": now},
        )
        inserted = await cursor.fetchone()
        if inserted is not None:
            return Claim(inserted[0], name, namespace, attempt, Phase.PENDING.value, "created")
        if not optimistic:
            # Lost a race (someone committed a conflicting row), unless the name is
            # held by another issue, which no number of rounds would resolve.
            cursor = await conn.execute(_SELECT_NAME_HOLDER, (namespace, name))
            holder = await cursor.fetchone()
            if holder is not None and (holder[0], holder[1]) != (tracker, issue_id):
                raise RunNameTaken(
                    f"run name {namespace}/{name} already belongs to {holder[0]} issue {holder[1]} "
                    f"(attempt {holder[2]}); the naming function must be unique per issue and attempt"
                )
        optimistic = False
    raise ClaimContention(
        f"claiming {tracker} issue {issue_id} lost {MAX_CLAIM_ROUNDS} races in a row without "
        "finding the winning run; is something deleting runs concurrently?"
    )


@dataclass(frozen=True)
class _LeanRow:
    id: int
    name: str
    namespace: str
    attempt: int
    phase: str
    ticket_updated_at: datetime

    def prior(self) -> PriorRun:
        return PriorRun(attempt=self.attempt, phase=self.phase, ticket_updated_at=self.ticket_updated_at)

    def claim(self, status: ClaimStatus) -> Claim:
        return Claim(self.id, self.name, self.namespace, self.attempt, self.phase, status)


def _by_attempt_lean(rows: list[_LeanRow], attempt: int) -> _LeanRow:
    return next(r for r in rows if r.attempt == attempt)


def _require_aware_time(moment: datetime) -> None:
    # UtcDateTime refuses naive values on the ORM path; the raw path must refuse them too.
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"ticket_updated_at must be an aware datetime, got {moment!r}")
