"""Alembic environment: runs on the connection ``services.storage.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from services.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
