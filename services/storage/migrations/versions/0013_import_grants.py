"""History imports under the least-privilege roles: the ingestion role writes ``import_runs``.

Migration 0011 made the table with no grant, so under deploy/'s roles only the superuser could
import: ``urbanpulse import`` as the ``ingest`` login, and ``POST /v1/imports`` through
URBANPULSE_IMPORT_DATABASE_URL (a login of that role), failed on the checkpoint. An import
writes what ingestion writes (readings, the quarantine) and its checkpoint; the API's role
stays without either (issue 16).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from services.storage.roles import sets_up_roles

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

GRANTS = "GRANT SELECT, INSERT, UPDATE, DELETE ON import_runs TO urbanpulse_ingest;"
REVOKE = "REVOKE SELECT, INSERT, UPDATE, DELETE ON import_runs FROM urbanpulse_ingest;"


def _roles_set_up() -> bool:
    # Only where 0006 set the roles up: the superuser or the owner migrating. The roles are
    # cluster-wide, so their mere existence says nothing about this database.
    return sets_up_roles(op.get_bind())


def upgrade() -> None:
    if _roles_set_up():
        op.execute(GRANTS)


def downgrade() -> None:
    if _roles_set_up():
        op.execute(REVOKE)
