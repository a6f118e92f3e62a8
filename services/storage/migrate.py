"""Apply the migrations and report what runs: ``urbanpulse db upgrade`` and ``db status``.

The storage mode is chosen once, at the first upgrade, from what the server offers (or what the
settings ask for), and recorded in ``storage_settings``; later upgrades keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from gateway.kinds import QUANTITIES

from .errors import ModeError
from .urls import sqlalchemy_url

MODES = ("timescaledb", "partitioned")


@dataclass(frozen=True, slots=True)
class StorageStatus:
    mode: str | None  # None: not migrated yet
    current: str | None
    head: str
    pending: tuple[str, ...]
    server_version: str
    timescaledb: str | None  # extension version installed in this database
    timescaledb_available: bool  # the server could load it


def _interval(value: timedelta) -> str:
    return f"{int(value.total_seconds())} seconds"


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "services.storage:migrations")
    config.attributes["connection"] = connection
    return config


def timescaledb_loadable(connection: sa.Connection) -> bool:
    """True when the extension is installed on the server and preloaded (it cannot load late)."""
    available = connection.scalar(
        sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
    )
    preload = connection.scalar(sa.text("SHOW shared_preload_libraries")) or ""
    return bool(available) and "timescaledb" in preload


def stored_mode(connection: sa.Connection) -> str | None:
    exists = connection.scalar(sa.text("SELECT to_regclass('storage_settings') IS NOT NULL"))
    if not exists:
        return None
    value = connection.scalar(sa.text("SELECT value FROM storage_settings WHERE name = 'mode'"))
    return str(value) if value is not None else None


def choose_mode(connection: sa.Connection, requested: str) -> str:
    loadable = timescaledb_loadable(connection)
    stored = stored_mode(connection)
    if requested not in (*MODES, "auto"):
        raise ModeError(requested, f"must be one of auto, {', '.join(MODES)}")
    if stored is not None:
        if requested not in ("auto", stored):
            raise ModeError(requested, f"this database was created in {stored!r} mode")
        return stored
    if requested == "timescaledb" and not loadable:
        raise ModeError(
            requested,
            "the server does not offer the timescaledb extension "
            "(installed and in shared_preload_libraries)",
        )
    if requested == "auto":
        return "timescaledb" if loadable else "partitioned"
    return requested


def upgrade(
    url: str,
    mode: str = "auto",
    retention: timedelta = timedelta(days=400),
    partition_interval: timedelta = timedelta(days=1),
    compress_after: timedelta = timedelta(days=7),
) -> str:
    """Bring the database to the newest schema; return the storage mode in force."""
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            chosen = choose_mode(connection, mode)
            connection.commit()
            config = _alembic_config(connection)
            config.attributes.update(
                storage_mode=chosen,
                retention=_interval(retention),
                partition_interval=_interval(partition_interval),
                compress_after=_interval(compress_after),
            )
            command.upgrade(config, "head")
            sync_quantities(connection)
            connection.commit()
        if chosen == "partitioned":
            # Imported here: partitions needs psycopg, and status/upgrade of a TimescaleDB
            # database never touches it.
            from .partitions import maintain

            maintain(url)
        return chosen
    finally:
        engine.dispose()


def sync_quantities(connection: sa.Connection) -> None:
    """Make the quantities table say what the kind catalog says (keys are stable)."""
    connection.execute(
        sa.text(
            "INSERT INTO quantities (key, name, unit, cumulative, description) "
            "VALUES (:key, :name, :unit, :cumulative, :description) "
            "ON CONFLICT (key) DO UPDATE SET name = excluded.name, unit = excluded.unit, "
            "cumulative = excluded.cumulative, description = excluded.description"
        ),
        [
            {
                "key": q.key,
                "name": q.name,
                "unit": q.unit,
                "cumulative": q.cumulative,
                "description": q.description,
            }
            for q in QUANTITIES.values()
        ],
    )


def status(url: str) -> StorageStatus:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            script = ScriptDirectory.from_config(_alembic_config(connection))
            head = script.get_current_head() or ""
            current = MigrationContext.configure(connection).get_current_revision()
            pending = tuple(
                rev.revision
                for rev in reversed(list(script.walk_revisions(base="base", head="heads")))
                if current is None or not _is_applied(script, rev.revision, current)
            )
            extension = connection.scalar(
                sa.text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            )
            return StorageStatus(
                mode=stored_mode(connection),
                current=current,
                head=head,
                pending=pending,
                server_version=str(connection.scalar(sa.text("SHOW server_version"))),
                timescaledb=extension,
                timescaledb_available=timescaledb_loadable(connection),
            )
    finally:
        engine.dispose()


def _is_applied(script: ScriptDirectory, revision: str, current: str) -> bool:
    return any(rev.revision == revision for rev in script.iterate_revisions(current, "base"))
