"""The pack ledger: (gateway, stream, seq) of every numbered pack stored (issue 15).

A plain table in both storage modes: it holds each gateway's packs awaiting receipt (pruned
below the oldest pack the gateway still holds, and by age), thousands of rows, not history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE pack_ledger (
    gateway_id text NOT NULL,
    stream text NOT NULL,
    seq bigint NOT NULL,
    oldest bigint NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_pack_ledger PRIMARY KEY (gateway_id, stream, seq)
);
COMMENT ON TABLE pack_ledger IS
    'numbered packs stored (readings or quarantine), so a pack seen again writes nothing';
COMMENT ON COLUMN pack_ledger.stream IS 'the gateway outbox file''s random id';
COMMENT ON COLUMN pack_ledger.oldest IS
    'lowest seq the gateway still held when it sent this pack: rows below are pruned';
CREATE INDEX ix_pack_ledger_stored_at ON pack_ledger (stored_at);
"""

DOWNGRADE = "DROP TABLE pack_ledger;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
