"""The tables (the first three's names are fixed so other tools can rely on them).

The partial unique index on foundry_runs is the database half of the one rule:
at most one run per (tracker, issue_id) whose phase is active. It is declared
here for `create_all` (SQLite dev databases, tests) and created by the Alembic
migration on PostgreSQL; a test proves the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from foundry.db.timeutil import UtcDateTime
from foundry.domain.phases import ACTIVE_PHASE_NAMES

ONE_ACTIVE_INDEX = "uq_foundry_runs_one_active_per_issue"

# Deterministic constraint names so migrations, models and error handling agree.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    __tablename__ = "foundry_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tracker: Mapped[str] = mapped_column(String(32))
    issue_id: Mapped[str] = mapped_column(String(128))
    issue_key: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253))
    attempt: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32))
    ticket_updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("tracker", "issue_id", "attempt"),
        UniqueConstraint("namespace", "name"),
        Index(
            ONE_ACTIVE_INDEX,
            "tracker",
            "issue_id",
            unique=True,
            sqlite_where=phase.in_(ACTIVE_PHASE_NAMES),
            postgresql_where=phase.in_(ACTIVE_PHASE_NAMES),
        ),
    )


class AuditEvent(Base):
    """Append-only; each row's hash covers the previous row's hash (per run)."""

    __tablename__ = "foundry_audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("foundry_runs.id"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The id of the key the hash is an HMAC with; NULL: an unkeyed sha256 link.
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)

    __table_args__ = (UniqueConstraint("run_id", "seq"),)


class AuditHead(Base):
    """One per run with keyed events: how long its trail is, under a MAC, so a cut-off tail shows."""

    __tablename__ = "foundry_audit_heads"

    run_id: Mapped[int] = mapped_column(ForeignKey("foundry_runs.id"), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))
    mac: Mapped[str] = mapped_column(String(64))


class WebhookDelivery(Base):
    __tablename__ = "foundry_webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    outcome: Mapped[str | None] = mapped_column(String(64), nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    __table_args__ = (UniqueConstraint("provider", "delivery_id"),)


class Sweep(Base):
    """A periodic re-read of a tracker (the Linear sweep): its cursors and who is running it.

    One row per sweep. The lease (holder, lease_until) lets one replica at a
    time run it; cursors move only under the lease and by compare-and-set.
    """

    __tablename__ = "foundry_sweeps"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    issues_after: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    comments_after: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    covered_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    holder: Mapped[str | None] = mapped_column(String(253), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


metadata = Base.metadata
