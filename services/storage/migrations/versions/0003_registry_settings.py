"""Registry: whether a meter is smart (ICT-1 counts only smart meters in its numerator).

The column is nullable: null means the kind's default (``gateway.kinds.SensorKind.smart``),
so rows registered before this revision keep counting as they did.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sensors ADD COLUMN smart boolean")
    op.execute(
        "COMMENT ON COLUMN sensors.smart IS "
        "'a meter that reports by itself (ICT-1); null: the kind''s default'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE sensors DROP COLUMN IF EXISTS smart")
