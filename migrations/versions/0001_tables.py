"""The runs, audit and webhook delivery tables.

Revision ID: 0001_tables
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_tables"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "foundry_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tracker", sa.String(32), nullable=False),
        sa.Column("issue_id", sa.String(128), nullable=False),
        sa.Column("issue_key", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        _ts("ticket_updated_at"),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_foundry_runs"),
        sa.UniqueConstraint("tracker", "issue_id", "attempt", name="uq_foundry_runs_tracker_issue_id_attempt"),
        sa.UniqueConstraint("namespace", "name", name="uq_foundry_runs_namespace_name"),
    )
    op.create_table(
        "foundry_audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _ts("at"),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_foundry_audit_events"),
        sa.ForeignKeyConstraint(["run_id"], ["foundry_runs.id"], name="fk_foundry_audit_events_run_id_foundry_runs"),
        sa.UniqueConstraint("run_id", "seq", name="uq_foundry_audit_events_run_id_seq"),
    )
    op.create_table(
        "foundry_webhook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        _ts("received_at"),
        sa.Column("outcome", sa.String(64), nullable=True),
        _ts("applied_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_foundry_webhook_deliveries"),
        sa.UniqueConstraint("provider", "delivery_id", name="uq_foundry_webhook_deliveries_provider_delivery_id"),
    )
    op.create_index("ix_foundry_webhook_deliveries_received_at", "foundry_webhook_deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_foundry_webhook_deliveries_received_at", table_name="foundry_webhook_deliveries")
    op.drop_table("foundry_webhook_deliveries")
    op.drop_table("foundry_audit_events")
    op.drop_table("foundry_runs")
