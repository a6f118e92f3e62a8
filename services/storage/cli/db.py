"""``urbanpulse db``: apply migrations, say what runs, refresh rollups, maintain partitions."""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from services.cli_support import settings_for_command

from .. import migrate, partitions, rollups
from ..errors import NotMigratedError, StorageError
from ..urls import libpq_url

app = typer.Typer(
    help="The data layer: migrations, storage mode, rollups, partitions.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]


def _fail(exc: Exception) -> typer.Exit:
    errors.print(f"[red]{exc}[/red]")
    return typer.Exit(1)


@app.command()
def upgrade(database_url: DatabaseOption = None) -> None:
    """Apply pending migrations (choosing the storage mode on first run)."""
    settings, url = settings_for_command(database_url)
    try:
        mode = migrate.upgrade(
            url,
            mode=settings.storage_mode.value,
            retention=settings.retention,
            partition_interval=settings.partition_interval,
        )
    except (StorageError, psycopg.Error) as exc:
        raise _fail(exc) from None
    console.print(f"database is up to date; storage mode: [bold]{mode}[/bold]")


@app.command()
def status(database_url: DatabaseOption = None) -> None:
    """Say which storage mode runs and which migrations are pending."""
    _, url = settings_for_command(database_url)
    try:
        state = migrate.status(url)
    except (StorageError, psycopg.Error) as exc:
        raise _fail(exc) from None
    table = Table(show_header=False, box=None)
    table.add_row("server", f"PostgreSQL {state.server_version}")
    table.add_row("storage mode", state.mode or "none yet (run `urbanpulse db upgrade`)")
    table.add_row(
        "timescaledb",
        state.timescaledb
        or ("available, not installed" if state.timescaledb_available else "not offered"),
    )
    table.add_row("revision", f"{state.current or '-'} (head {state.head})")
    table.add_row("pending", ", ".join(state.pending) or "none")
    console.print(table)
    if state.pending:
        raise typer.Exit(3)


@app.command("refresh-rollups")
def refresh_rollups(database_url: DatabaseOption = None) -> None:
    """Bring the 1-minute, 1-hour and 1-day rollups up to date now."""
    _, url = settings_for_command(database_url)
    try:
        mode = migrate.status(url).mode
        if mode is None:
            raise NotMigratedError
        with psycopg.connect(libpq_url(url)) as conn:
            result = rollups.refresh(conn, mode)
    except (StorageError, psycopg.Error) as exc:
        raise _fail(exc) from None
    where = f"up to {result.watermark:%Y-%m-%d %H:%M} UTC" if result.watermark else "(timescaledb)"
    console.print(f"rollups refreshed {where}")


@app.command()
def maintain(database_url: DatabaseOption = None) -> None:
    """Create partitions ahead and drop those past every retention policy (partition mode)."""
    settings, url = settings_for_command(database_url)
    try:
        if migrate.status(url).mode != "partitioned":
            console.print("nothing to do: TimescaleDB's policies maintain chunks")
            return
        # What is dropped follows the retention policies (`urbanpulse retention show`).
        result = partitions.maintain(url, ahead=settings.partitions_ahead)
    except (StorageError, psycopg.Error) as exc:
        raise _fail(exc) from None
    console.print(f"partitions created: {result.created}; dropped: {len(result.dropped)}")
