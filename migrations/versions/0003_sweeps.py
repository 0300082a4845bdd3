"""The sweep table: cursors and lease of the periodic Linear re-read.

Revision ID: 0003_sweeps
Revises: 0002_one_active_guard
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sweeps"
down_revision = "0002_one_active_guard"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "foundry_sweeps",
        sa.Column("name", sa.String(64), nullable=False),
        _ts("issues_after"),
        _ts("comments_after"),
        _ts("covered_until"),
        sa.Column("holder", sa.String(253), nullable=True),
        _ts("lease_until"),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_foundry_sweeps"),
    )


def downgrade() -> None:
    op.drop_table("foundry_sweeps")
