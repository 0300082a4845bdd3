"""Keyed audit chain: the key id on each event, and one keyed head record per run.

Revision ID: 0004_keyed_audit
Revises: 0003_sweeps

Existing events keep a NULL key_id: they are unkeyed links and still verify as
before. A run's first event written with a key also writes its head record,
which from then on vouches for the whole trail's length (older links included).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_keyed_audit"
down_revision = "0003_sweeps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("foundry_audit_events", sa.Column("key_id", sa.String(16), nullable=True))
    op.create_table(
        "foundry_audit_heads",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["foundry_runs.id"], name="fk_foundry_audit_heads_run_id_foundry_runs"),
        sa.PrimaryKeyConstraint("run_id", name="pk_foundry_audit_heads"),
    )


def downgrade() -> None:
    op.drop_table("foundry_audit_heads")
    with op.batch_alter_table("foundry_audit_events") as batch:
        batch.drop_column("key_id")
