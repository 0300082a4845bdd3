"""The guard: at most one active run per (tracker, issue_id).

Revision ID: 0002_one_active_guard
Revises: 0001_tables

A separate revision so that a database holding runs from before the guard
fails with a list of the offending runs rather than a bare unique violation.
The active phases are frozen here on purpose: if the code's list changes, a new
revision must rebuild the index (tests/test_db_migrations.py compares them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from foundry.db.migrate import ActiveRunRow, DuplicateActiveRuns

revision = "0002_one_active_guard"
down_revision = "0001_tables"
branch_labels = None
depends_on = None

INDEX = "uq_foundry_runs_one_active_per_issue"
ACTIVE_PHASES = ("Pending", "Analysing", "WaitingApproval", "Approved", "AgentRunning", "PROpen", "ReviewRequired")


def _active() -> sa.ColumnElement[bool]:
    return sa.column("phase").in_(ACTIVE_PHASES)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Block writers between our check and the index build, so a run inserted
        # meanwhile cannot turn a readable refusal into a raw unique violation.
        op.execute("LOCK TABLE foundry_runs IN SHARE MODE")
    duplicates = _duplicate_active_runs(bind)
    if duplicates:
        raise DuplicateActiveRuns(duplicates)
    op.create_index(
        INDEX,
        "foundry_runs",
        ["tracker", "issue_id"],
        unique=True,
        postgresql_where=_active(),
        sqlite_where=_active(),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="foundry_runs")


def _duplicate_active_runs(bind: sa.Connection) -> list[ActiveRunRow]:
    runs = sa.table(
        "foundry_runs",
        *(sa.column(c) for c in ("id", "tracker", "issue_id", "issue_key", "namespace", "name", "attempt", "phase")),
    )
    crowded = (
        sa.select(runs.c.tracker, runs.c.issue_id)
        .where(runs.c.phase.in_(ACTIVE_PHASES))
        .group_by(runs.c.tracker, runs.c.issue_id)
        .having(sa.func.count() > 1)
        .subquery()
    )
    query = (
        sa.select(runs)
        .join(crowded, sa.and_(runs.c.tracker == crowded.c.tracker, runs.c.issue_id == crowded.c.issue_id))
        .where(runs.c.phase.in_(ACTIVE_PHASES))
        .order_by(runs.c.tracker, runs.c.issue_id, runs.c.id)
    )
    return [ActiveRunRow(**row._mapping) for row in bind.execute(query)]
