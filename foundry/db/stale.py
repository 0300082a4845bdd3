"""Reading active rows page by page, for the reaper (foundry.operator.reaper).

Active rows are few next to the finished ones that pile up over the years, so
the page query walks the partial unique index of active rows (its predicate is
exactly `phase IN active`) in its own (tracker, issue_id) order, resuming after
the last key seen: each page costs its own size, never a scan of the table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, Select, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from foundry.db.engine import session_factory
from foundry.db.models import Run
from foundry.db.records import RunRecord
from foundry.domain.phases import ACTIVE_PHASE_NAMES

Bind = Engine | sessionmaker[Session]
PageKey = tuple[str, str]  # (tracker, issue_id) of the last row of the previous page


def active_page_query(untouched_since: datetime, after: PageKey | None, limit: int) -> Select[tuple[Run]]:
    query = select(Run).where(Run.phase.in_(ACTIVE_PHASE_NAMES), Run.updated_at < untouched_since)
    if after is not None:
        query = query.where(tuple_(Run.tracker, Run.issue_id) > tuple_(*after))
    return query.order_by(Run.tracker, Run.issue_id).limit(limit)


def active_rows_page(bind: Bind, untouched_since: datetime, after: PageKey | None,
                     limit: int) -> list[RunRecord]:
    """Up to `limit` active rows not updated since `untouched_since`, after the key `after`."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    with session_factory(bind)() as session:
        return [RunRecord.of(r) for r in session.scalars(active_page_query(untouched_since, after, limit))]
