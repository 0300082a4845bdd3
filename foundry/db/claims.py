"""Claiming the run for an issue: insert first, and let the unique index decide.

The product Foundry replaces checked for an active run in one session and
created it in another, so simultaneous deliveries each made a run. Here the
read only chooses the attempt number; who wins is decided by the INSERT against
`uq_foundry_runs_one_active_per_issue` (and the unique attempt number). A loser
gets IntegrityError, rolls back and reads the winner: it attaches.

The rounds are written once (_claim_rounds, which yields the reads and writes it
needs); claim_run answers them through the ORM, claim_run_pg through plain
psycopg statements for the bridge's lean path (docs/decisions/0002-bridge-lean-hot-path.md).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
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
from foundry.domain.attempts import Claim, ClaimAction, ClaimStatus, PriorRun, decide_claim
from foundry.domain.phases import ACTIVE_PHASE_NAMES, Phase

if TYPE_CHECKING:  # psycopg is only needed by callers of the lean PostgreSQL path
    from psycopg import AsyncConnection

Bind = Engine | sessionmaker[Session]

# Each lost race means another caller committed a row we will see on the next
# read, so a handful of rounds is plenty; the bound only stops a pathological loop.
MAX_CLAIM_ROUNDS = 8


class RunNameTaken(RuntimeError):
    """name_for() produced a name that a run of another issue already holds."""


class ClaimContention(RuntimeError):
    """The claim kept losing races without ever seeing a winner (should not happen)."""


@dataclass(frozen=True)
class ClaimRequest:
    """What a claim is asked: the issue, where its run goes, the ticket's updatedAt, how runs are named."""

    tracker: str
    issue_id: str
    issue_key: str
    namespace: str
    ticket_updated_at: datetime
    name_for: Callable[[int], str]
    clock: Clock = utcnow


@dataclass(frozen=True)
class _Row:
    """An earlier run of the issue, as the claim reads it."""

    id: int
    name: str
    namespace: str
    attempt: int
    phase: str
    ticket_updated_at: datetime

    def prior(self) -> PriorRun:
        return PriorRun(attempt=self.attempt, phase=self.phase, ticket_updated_at=self.ticket_updated_at)

    def claim(self, status: ClaimStatus) -> Claim:
        return Claim(status, self.name, self.attempt, self.namespace, run_id=self.id, phase=self.phase)


@dataclass(frozen=True)
class _ReadRuns:
    """Every run of the issue, newest attempt first (answer: list[_Row])."""


@dataclass(frozen=True)
class _Insert:
    """Insert this attempt as a Pending run; `first`: only if the issue has no run at all.
    Answer: the new row's id, or None when a unique index (or `first`) refused it."""

    attempt: int
    name: str
    first: bool


@dataclass(frozen=True)
class _NameHolder:
    """Who holds this run name in the request's namespace (answer: (tracker, issue_id, attempt) or None)."""

    name: str


_Step = _ReadRuns | _Insert | _NameHolder


def _claim_rounds(request: ClaimRequest) -> Generator[_Step, Any, Claim]:
    """The claim, written once: yields the reads and writes it needs, is sent their answers.

    The first round inserts attempt 1 without reading (right exactly when the
    issue has no rows: decide_claim([]) is CREATE 1). Later rounds read, decide,
    and insert-or-nothing; the unique indexes decide who wins a race, and the
    loser reads the winner next round and follows it.
    """
    _require_text(tracker=request.tracker, issue_id=request.issue_id, issue_key=request.issue_key,
                  namespace=request.namespace)
    _require_aware_time(request.ticket_updated_at)
    attempt, first = 1, True
    for _ in range(MAX_CLAIM_ROUNDS):
        if not first:
            rows: list[_Row] = yield _ReadRuns()
            decision = decide_claim([r.prior() for r in rows], request.ticket_updated_at)
            if decision.action is ClaimAction.ATTACH:
                return _by_attempt(rows, decision.attempt).claim("attached")
            if decision.action is ClaimAction.UNCHANGED:
                return _by_attempt(rows, decision.attempt).claim("unchanged")
            attempt = decision.attempt
        name = request.name_for(attempt)
        run_id = yield _Insert(attempt, name, first)
        if run_id is not None:
            return Claim("created", name, attempt, request.namespace, run_id=run_id, phase=Phase.PENDING.value)
        if not first:
            # Lost a race (someone committed a conflicting row), unless the name is
            # held by another issue, which no number of rounds would resolve.
            holder = yield _NameHolder(name)
            if holder is not None and (holder[0], holder[1]) != (request.tracker, request.issue_id):
                raise RunNameTaken(
                    f"run name {request.namespace}/{name} already belongs to {holder[0]} issue {holder[1]} "
                    f"(attempt {holder[2]}); the naming function must be unique per issue and attempt"
                )
        first = False
    raise ClaimContention(
        f"claiming {request.tracker} issue {request.issue_id} lost {MAX_CLAIM_ROUNDS} races in a row without "
        "finding the winning run; is something deleting runs concurrently?"
    )


def _by_attempt(rows: list[_Row], attempt: int) -> _Row:
    return next(r for r in rows if r.attempt == attempt)


class _OrmStore:
    """The steps of _claim_rounds through SQLAlchemy sessions (PostgreSQL or SQLite), one transaction each."""

    def __init__(self, sessions: sessionmaker[Session], request: ClaimRequest) -> None:
        self.sessions = sessions
        self.request = request

    def answer(self, step: _Step) -> Any:
        r = self.request
        with self.sessions() as session:
            if isinstance(step, _ReadRuns):
                return [_Row(x.id, x.name, x.namespace, x.attempt, x.phase, x.ticket_updated_at)
                        for x in _runs_of_issue(session, r.tracker, r.issue_id)]
            if isinstance(step, _NameHolder):
                holder = session.scalars(
                    select(Run).where(Run.namespace == r.namespace, Run.name == step.name)).one_or_none()
                return None if holder is None else (holder.tracker, holder.issue_id, holder.attempt)
            try:
                with session.begin():
                    if step.first and session.scalar(
                        select(Run.id).where(Run.tracker == r.tracker, Run.issue_id == r.issue_id).limit(1)
                    ) is not None:
                        return None
                    now = r.clock()
                    row = Run(tracker=r.tracker, issue_id=r.issue_id, issue_key=r.issue_key, namespace=r.namespace,
                              name=step.name, attempt=step.attempt, phase=Phase.PENDING.value,
                              ticket_updated_at=r.ticket_updated_at, created_at=now, updated_at=now)
                    session.add(row)
                    session.flush()
                    return int(row.id)
            except IntegrityError:
                return None


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
    return claim_run_orm(bind, ClaimRequest(tracker, issue_id, issue_key, namespace, ticket_updated_at, name_for,
                                            clock))


def claim_run_orm(bind: Bind, request: ClaimRequest) -> Claim:
    """claim_run for a ClaimRequest: each step of _claim_rounds through the ORM (PostgreSQL or SQLite)."""
    store = _OrmStore(session_factory(bind), request)
    rounds = _claim_rounds(request)
    try:
        step = next(rounds)
        while True:
            step = rounds.send(store.answer(step))
    except StopIteration as done:
        return done.value


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


def _runs_of_issue(session: Session, tracker: str, issue_id: str) -> list[Run]:
    return list(
        session.scalars(
            select(Run).where(Run.tracker == tracker, Run.issue_id == issue_id).order_by(Run.attempt.desc())
        )
    )


def _require_text(**fields: str) -> None:
    empty = [k for k, v in fields.items() if not isinstance(v, str) or not v.strip()]
    if empty:
        raise ValueError(f"claim needs non-empty {', '.join(empty)}")


# ---------------------------------------------------------------- lean PostgreSQL claim
#
# The same rounds as claim_run (_claim_rounds), for a hot path that cannot afford the
# ORM: plain psycopg statements in autocommit, so a claim for a new issue is one round trip.
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


async def claim_run_pg(conn: "AsyncConnection[Any]", request: ClaimRequest) -> Claim:
    """claim_run on PostgreSQL through an autocommit psycopg AsyncConnection: same rounds, same answers.

    One round trip when the issue has never had a run; otherwise read, decide
    (decide_claim), insert-or-nothing, as many rounds as races are lost (bounded).
    """
    store = _PgStore(conn, request)
    rounds = _claim_rounds(request)
    try:
        step = next(rounds)
        while True:
            step = rounds.send(await store.answer(step))
    except StopIteration as done:
        return done.value


class _PgStore:
    """The steps of _claim_rounds as plain statements on one autocommit connection."""

    def __init__(self, conn: "AsyncConnection[Any]", request: ClaimRequest) -> None:
        self.conn = conn
        self.params: dict[str, Any] = {
            "tracker": request.tracker,
            "issue_id": request.issue_id,
            "issue_key": request.issue_key,
            "namespace": request.namespace,
            "phase": Phase.PENDING.value,
            "ticket_updated_at": request.ticket_updated_at,
        }
        self.clock = request.clock

    async def answer(self, step: _Step) -> Any:
        if isinstance(step, _ReadRuns):
            cursor = await self.conn.execute(_SELECT_RUNS, self.params)
            return [_Row(*r) for r in await cursor.fetchall()]
        if isinstance(step, _Insert):
            cursor = await self.conn.execute(
                _INSERT_FIRST_RUN if step.first else _INSERT_NEXT_RUN,
                {**self.params, "name": step.name, "attempt": step.attempt, "now": self.clock()},
            )
            inserted = await cursor.fetchone()
            return None if inserted is None else int(inserted[0])
        cursor = await self.conn.execute(_SELECT_NAME_HOLDER, (self.params["namespace"], step.name))
        holder = await cursor.fetchone()
        return None if holder is None else (holder[0], holder[1], holder[2])


def _require_aware_time(moment: datetime) -> None:
    # Before any statement: a naive time would fail deep in the driver (or the ORM's UtcDateTime).
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"ticket_updated_at must be an aware datetime (with a timezone), got {moment!r}")
