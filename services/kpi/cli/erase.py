"""``urbanpulse erase sensor <id>``: erase one sensor's raw readings over a range, audited.

    urbanpulse erase sensor env-aq-7 --start 2026-03-01 --end 2026-03-08 \
        --reason "device mislabelled, GDPR request 112" --rollups recompute
    urbanpulse erase list
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from services.cli_support import settings_for_command
from services.storage import erasure as stored
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url

from .. import erasure

app = typer.Typer(
    help="Erase a sensor's raw readings over a range (audited).", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
def sensor(  # noqa: PLR0917 - typer maps options to parameters
    sensor_id: Annotated[str, typer.Argument(help="the sensor's id")],
    start: Annotated[str, typer.Option(help="ISO date or time (UTC unless given), inclusive")],
    end: Annotated[str, typer.Option(help="ISO date or time (UTC unless given), exclusive")],
    reason: Annotated[str, typer.Option(help="why: kept in the audit")],
    rollups: Annotated[
        str, typer.Option(help="keep: rollups unchanged; recompute: the data leaves them too")
    ] = "keep",
    database_url: DatabaseOption = None,
) -> None:
    """Erase the sensor's raw readings in [start, end)."""
    settings, url = settings_for_command(database_url)
    request = stored.Request(
        sensor_id, _time(start), _time(end), reason, rollups, f"cli:{getpass.getuser()}"
    )
    with psycopg.connect(libpq_url(url)) as conn:
        try:
            done = erasure.erase(
                conn, storage_mode(conn), request, max_span=settings.erasure_max_span
            )
        except stored.SensorNotFoundError as exc:
            errors.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        except stored.InvalidErasureError as exc:
            errors.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(
        f"erasure {done['id']}: {done['rows_erased']} raw rows erased, rollups {rollups} "
        f"({done['buckets_recomputed']} buckets recomputed)"
        + ("; current KPIs refreshed" if done["kpis_refreshed"] else "")
    )


@app.command("list")
def list_(
    sensor_id: Annotated[str | None, typer.Option("--sensor", help="one sensor's")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    database_url: DatabaseOption = None,
) -> None:
    """The erasure audit, newest first."""
    _, url = settings_for_command(database_url)
    with psycopg.connect(libpq_url(url)) as conn:
        rows = stored.listed(conn, sensor_id=sensor_id, limit=limit)
    # One line each: the audit is read (and grepped) whole, reason included.
    for row in rows:
        console.print(
            f"#{row['id']} {row['requested_at']:%Y-%m-%d %H:%M} {row['actor']} "
            f"{row['sensor_id']} [{row['range_start']:%Y-%m-%dT%H:%M}, "
            f"{row['range_end']:%Y-%m-%dT%H:%M}) rollups {row['rollups']}: "
            f"{row['rows_erased']} rows, {row['buckets_recomputed']} buckets recomputed; "
            f"reason: {row['reason']}",
            soft_wrap=True,
            highlight=False,
        )
