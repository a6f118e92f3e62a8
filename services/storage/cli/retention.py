"""``urbanpulse retention``: show, set and unset the retention policies; apply them now.

urbanpulse retention set domain traffic --raw-days 30 --rollup-1m-years 1
urbanpulse retention set default --raw-days 400
urbanpulse retention apply --dry-run
urbanpulse retention apply --every 3600     # for ever: deploy/compose.yaml's `retention` service
"""

from __future__ import annotations

import getpass
import time
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from services.cli_support import settings_for_command

from .. import retention
from ..modes import storage_mode
from ..retention_policy import SCOPES, InvalidPolicyError, make_policy
from ..urls import libpq_url

app = typer.Typer(
    help="How long raw readings (days) and rollups (years) are kept, per domain, kind or "
    "quantity; the most specific policy wins.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]
ScopeArg = Annotated[str, typer.Argument(help=f"one of {', '.join(SCOPES)}")]
NameArg = Annotated[str, typer.Argument(help="the domain, kind or quantity (not for default)")]
Years = Annotated[int | None, typer.Option(help="years kept (none: for ever)")]


def _connect(database_url: str | None) -> psycopg.Connection[tuple[object, ...]]:
    _, url = settings_for_command(database_url)
    return psycopg.connect(libpq_url(url))


def _years(value: object) -> str:
    return "-" if value is None else str(value)


@app.command()
def show(database_url: DatabaseOption = None) -> None:
    """List the policies, the default first."""
    with _connect(database_url) as conn:
        rows = retention.listed(conn)
    table = Table(
        "scope", "name", "raw (d)", "1m (y)", "1h (y)", "1d (y)", "set by", caption="-: for ever"
    )
    for row in rows:
        table.add_row(
            str(row["scope"]),
            str(row["name"]) or "-",
            str(row["raw_days"]),
            *(_years(row[f"rollup_{level}_years"]) for level in ("1m", "1h", "1d")),
            str(row["updated_by"]),
        )
    console.print(table)


@app.command("set")
def set_(  # noqa: PLR0917 - typer maps options to parameters
    scope: ScopeArg,
    name: NameArg = "",
    raw_days: Annotated[int, typer.Option(help="days raw readings are kept")] = 400,
    rollup_1m_years: Years = None,
    rollup_1h_years: Years = None,
    rollup_1d_years: Years = None,
    database_url: DatabaseOption = None,
) -> None:
    """Set the policy of a selector (replacing what it had)."""
    try:
        policy = make_policy(
            scope, name, raw_days, (rollup_1m_years, rollup_1h_years, rollup_1d_years)
        )
    except InvalidPolicyError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    with _connect(database_url) as conn:
        retention.set_policy(conn, policy, f"cli:{getpass.getuser()}")
        conn.commit()
    console.print(f"{scope} {name}".strip() + f": raw {raw_days} d")


@app.command()
def unset(scope: ScopeArg, name: NameArg = "", database_url: DatabaseOption = None) -> None:
    """Remove a selector's policy: its series fall back to a less specific one."""
    with _connect(database_url) as conn:
        try:
            removed = retention.unset_policy(conn, scope, name)
        except InvalidPolicyError as exc:
            errors.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        conn.commit()
    if not removed:
        errors.print(f"[red]no policy for {scope} {name!r}[/red]")
        raise typer.Exit(1)
    console.print(f"{scope} {name}".strip() + ": removed")


@app.command()
def apply(
    dry_run: Annotated[bool, typer.Option(help="count what would go, remove nothing")] = False,
    every: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="apply again every SECONDS until stopped (a failed run is reported and tried "
            "again then; a bounded run's rest goes on at once)",
        ),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Remove what the policies expire now (the ingestion workers also do it every hour; in
    TimescaleDB mode only the owner of the hypertables and aggregates may, so a deployment
    under least-privilege roles runs this as the owner, with ``--every``)."""
    if every is None:
        with _connect(database_url) as conn:
            _report(retention.apply(conn, storage_mode(conn), dry_run=dry_run))
        return
    while True:
        complete = True
        try:
            with _connect(database_url) as conn:
                result = retention.apply(conn, storage_mode(conn), dry_run=dry_run)
            _report(result)
            complete = result.complete
        except psycopg.Error as exc:
            # The database away or restarting: the service stays up and tries at the next run.
            errors.print(f"[red]retention not applied: {exc}[/red]")
        if complete:
            time.sleep(every)


def _report(result: retention.ApplyResult) -> None:
    verb = "would remove" if result.dry_run else "removed"
    rollup_rows = ", ".join(f"{k} {v}" for k, v in result.rollup_rows.items())
    console.print(
        f"{verb}: raw rows {result.raw_rows}; rollup rows {rollup_rows}; "
        f"partitions or chunks {len(result.dropped)}"
        + ("" if result.complete else " (bounded: run again for the rest)")
    )
