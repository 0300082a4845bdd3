"""The sweep's row in `foundry_sweeps`: a lease so one replica sweeps at a time, and cursors moved by compare-and-set.

Why a row and not a PostgreSQL advisory lock: it works the same on SQLite
(the demo), survives a connection drop without silently losing the lock, and
the cursor update itself checks both the lease and the old cursor, so even a
replica whose lease ran out mid-round cannot move the cursor under another.
A replica that dies holding the lease only delays the sweep until the lease
ends. The commands the sweep feeds are idempotent, so a round repeated after
a lost lease re-applies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from foundry.db.models import Run, Sweep
from foundry.domain.phases import ACTIVE_PHASE_NAMES
from foundry.linear_sweep.decide import LastRun

TRACKER = "linear"


@dataclass(frozen=True)
class SweepState:
    name: str
    issues_after: datetime | None
    comments_after: datetime | None
    covered_until: datetime | None
    holder: str | None
    lease_until: datetime | None


def _columns():  # noqa: ANN202 - a Select of SweepState's fields, in order
    return select(Sweep.name, Sweep.issues_after, Sweep.comments_after, Sweep.covered_until, Sweep.holder,
                  Sweep.lease_until)


def read(engine: Engine, name: str) -> SweepState | None:
    with engine.connect() as conn:
        row = conn.execute(_columns().where(Sweep.name == name)).first()
    return SweepState(*row) if row else None


def _ensure_row(engine: Engine, name: str, now: datetime) -> None:
    try:
        with engine.begin() as conn:
            if conn.execute(select(Sweep.name).where(Sweep.name == name)).first() is None:
                conn.execute(insert(Sweep).values(name=name, updated_at=now))
    except IntegrityError:
        pass  # another replica inserted it first


def acquire(engine: Engine, name: str, holder: str, now: datetime, ttl: timedelta) -> SweepState | None:
    """Take (or extend) the lease; the row's state when we hold it, None when another replica does."""
    _ensure_row(engine, name, now)
    with engine.begin() as conn:
        taken = conn.execute(
            update(Sweep)
            .where(Sweep.name == name,
                   or_(Sweep.holder.is_(None), Sweep.holder == holder, Sweep.lease_until.is_(None),
                       Sweep.lease_until < now))
            .values(holder=holder, lease_until=now + ttl, updated_at=now)
        ).rowcount
        if taken != 1:
            return None
        values = conn.execute(_columns().where(Sweep.name == name)).one()
    return SweepState(*values)


def renew(engine: Engine, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Extend a lease we still hold (between pages of a long round); False when it was lost."""
    with engine.begin() as conn:
        return conn.execute(
            update(Sweep)
            .where(Sweep.name == name, Sweep.holder == holder, Sweep.lease_until >= now)
            .values(lease_until=now + ttl, updated_at=now)
        ).rowcount == 1


def advance(engine: Engine, before: SweepState, holder: str, now: datetime, *, issues_after: datetime | None,
            comments_after: datetime | None, covered_until: datetime) -> bool:
    """Move the cursors, only if we still hold the lease and nobody moved them since `before`."""
    with engine.begin() as conn:
        return conn.execute(
            update(Sweep)
            .where(Sweep.name == before.name, Sweep.holder == holder, Sweep.lease_until >= now,
                   Sweep.issues_after.is_not_distinct_from(before.issues_after),
                   Sweep.comments_after.is_not_distinct_from(before.comments_after))
            .values(issues_after=issues_after, comments_after=comments_after, covered_until=covered_until,
                    updated_at=now)
        ).rowcount == 1


def release(engine: Engine, name: str, holder: str, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(Sweep).where(Sweep.name == name, Sweep.holder == holder)
                     .values(holder=None, lease_until=None, updated_at=now))


# ---------------------------------------------------------------- what the runs table says


def last_runs(engine: Engine, issue_ids: list[str]) -> dict[str, LastRun]:
    """Each issue's latest run (highest attempt), for the issues that have one."""
    if not issue_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(Run.issue_id, Run.attempt, Run.phase, Run.ticket_updated_at)
            .where(Run.tracker == TRACKER, Run.issue_id.in_(issue_ids))
        ).all()
    latest: dict[str, tuple[int, LastRun]] = {}
    for issue_id, attempt, phase, ticket_updated_at in rows:
        if issue_id not in latest or attempt > latest[issue_id][0]:
            latest[issue_id] = (attempt, LastRun(phase, ticket_updated_at))
    return {issue_id: last for issue_id, (_, last) in latest.items()}


def active_runs(engine: Engine) -> dict[str, datetime]:
    """Issue id → when its active run was created, for every Linear issue with an active run."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Run.issue_id, Run.created_at)
            .where(and_(Run.tracker == TRACKER, Run.phase.in_(ACTIVE_PHASE_NAMES)))
        ).all()
    return {issue_id: created_at for issue_id, created_at in rows}
