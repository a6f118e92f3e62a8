"""History imports: one row per imported file, its checkpoint committed with each batch.

An import resumed after a crash or an interruption starts after the last committed unit (line
or row), so nothing is lost and nothing is written or quarantined twice; a file imported again
(same bytes, same options) is found here and writes nothing (issue 16).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE import_runs (
    id text CONSTRAINT pk_import_runs PRIMARY KEY,
    source text NOT NULL,
    format text NOT NULL,
    position bigint NOT NULL DEFAULT 0,
    units bigint NOT NULL DEFAULT 0,
    records bigint NOT NULL DEFAULT 0,
    stored bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    conflicts bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    span_lo timestamptz,
    span_hi timestamptz,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
COMMENT ON TABLE import_runs IS 'history imports (urbanpulse import): checkpoint and counts';
COMMENT ON COLUMN import_runs.id IS 'sha256 of the file''s bytes and the import options';
COMMENT ON COLUMN import_runs.position IS 'last line (or row) committed: a resume starts after it';
COMMENT ON COLUMN import_runs.finished_at IS 'rollups and KPIs refreshed: the import is complete';
"""

DOWNGRADE = "DROP TABLE import_runs;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
