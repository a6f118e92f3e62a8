"""``urbanpulse keys``: create, list and revoke API keys. The secret is printed once."""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from services.cli_support import settings_for_command
from services.storage.urls import libpq_url

from ..auth import CACHE_TTL_S
from ..keys import ROLES, ApiKeyError, create_key, list_keys, revoke_key

app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]


@app.command()
def create(
    name: Annotated[str, typer.Option(help="who holds the key, e.g. 'water utility app'")],
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    database_url: DatabaseOption = None,
) -> None:
    """Make a key and print it, once: only its hash is stored."""
    _, url = settings_for_command(database_url)
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            key_id, secret = create_key(conn, name, role)
    except ApiKeyError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except psycopg.Error as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    errors.print(f"key {key_id} ({role}) created; store it now, it is not shown again:")
    typer.echo(secret)


@app.command("list")
def list_(
    active: Annotated[bool, typer.Option("--active", help="hide revoked keys")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """List keys (never their secrets)."""
    _, url = settings_for_command(database_url)
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            found = list_keys(conn, include_revoked=not active)
    except psycopg.Error as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    table = Table()
    # The id is what `revoke` takes: never wrapped, so it can be copied whole.
    table.add_column("id", no_wrap=True)
    for heading in ("name", "role", "created", "last used", "revoked"):
        table.add_column(heading)
    for key in found:
        table.add_row(
            key.id,
            key.name,
            key.role,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "-",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "-",
        )
    console.print(table)


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (the part before the dot)")],
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a key; running APIs refuse it within seconds (their verified-key cache)."""
    _, url = settings_for_command(database_url)
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            when = revoke_key(conn, key_id)
    except ApiKeyError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except psycopg.Error as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"key {key_id} revoked at {when:%Y-%m-%d %H:%M:%S}; refused everywhere within "
        f"{CACHE_TTL_S:g} s"
    )
