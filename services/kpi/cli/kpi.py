"""``urbanpulse kpi``: show KPI values, record baselines, set targets, refresh the current values.

Times given without a timezone are read on the city's wall clock (``city_settings.timezone``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from services.cli_support import settings_for_command
from services.storage import kpi_targets
from services.storage.city_settings import UnknownDistrictError
from services.storage.urls import libpq_url

from .. import baseline, engine
from ..catalog import KPIS
from ..errors import KpiError, UnknownDistrict, UnknownKpi
from ..periods import period_bounds
from ..rating import Quality, Rating, checked_band

app = typer.Typer(
    help="The city's KPIs: values, baselines, targets, current values.", no_args_is_help=True
)
baseline_app = typer.Typer(help="Record and show the baseline period's values.")
targets_app = typer.Typer(help="Override the catalog's targets for the city or a district.")
app.add_typer(baseline_app, name="baseline")
app.add_typer(targets_app, name="targets")
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]
StartOption = Annotated[str | None, typer.Option(help="ISO date or time, inclusive")]
EndOption = Annotated[str | None, typer.Option(help="ISO date or time, exclusive")]


def _fail(exc: Exception) -> typer.Exit:
    errors.print(f"[red]{exc}[/red]")
    return typer.Exit(1)


def _connect(database_url: str | None) -> psycopg.Connection[tuple[object, ...]]:
    _, url = settings_for_command(database_url)
    return psycopg.connect(libpq_url(url))


def _moment(text: str, timezone: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


_RATING_STYLE = {
    Rating.MET: "green",
    Rating.WARNING: "yellow",
    Rating.MISSED: "red",
    Rating.INSUFFICIENT_DATA: "dim",
}


@app.command()
def show(
    kpi_id: Annotated[str, typer.Argument(help="e.g. WAT-1")],
    *,
    period: Annotated[
        str, typer.Option(help="the current hour, day, week, month or year (without --start)")
    ] = "day",
    start: StartOption = None,
    end: EndOption = None,
    grain: Annotated[str | None, typer.Option(help="hour, day, week, month or year")] = None,
    district: Annotated[list[str] | None, typer.Option(help="repeat for several")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Compute a KPI for a period (or a series at a grain), per district and for the city."""
    try:
        with _connect(database_url) as conn:
            timezone = engine.load_settings(conn).timezone
            if start is None and end is None:
                lower, upper = period_bounds(period, datetime.now(UTC), timezone)
            elif start is None or end is None:
                raise typer.BadParameter("give both --start and --end, or neither")
            else:
                lower, upper = _moment(start, timezone), _moment(end, timezone)
            values = engine.compute(conn, kpi_id, lower, upper, grain=grain, districts=district)
    except (KpiError, psycopg.Error) as exc:
        raise _fail(exc) from None
    kpi = KPIS[kpi_id]
    table = Table(title=f"{kpi.id} {kpi.name} ({kpi.unit}, {kpi.better.value} is better)")
    for column in ("period start", "scope", "value", "rating", "target / warning", "coverage"):
        table.add_column(column)
    table.add_column("vs baseline")
    zone = ZoneInfo(timezone)
    for value in values:
        change = value.baseline.change if value.baseline else None
        table.add_row(
            f"{value.period_start.astimezone(zone):%Y-%m-%d %H:%M}",
            value.scope,
            _number(value.value),
            f"[{_RATING_STYLE[value.rating]}]{value.rating.value}[/]",
            f"{value.target:g} / {value.warning:g}",
            f"{value.coverage.ratio:.0%} {value.coverage.quality.value} "
            f"({value.coverage.sources_used}/{value.coverage.sources_expected})",
            "-" if change is None else f"{change:+.2f}",
        )
    console.print(table)


@baseline_app.command("set")
def baseline_set(
    start: Annotated[str, typer.Option(help="ISO date or time, inclusive")],
    end: Annotated[str, typer.Option(help="ISO date or time, exclusive")],
    kpi: Annotated[list[str] | None, typer.Option(help="default: every KPI")] = None,
    recorded_by: Annotated[str | None, typer.Option(help="who records it")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Compute and record the baseline of each KPI for the city and every district."""
    try:
        with _connect(database_url) as conn:
            timezone = engine.load_settings(conn).timezone
            values = baseline.set_baseline(
                conn, _moment(start, timezone), _moment(end, timezone), kpi, recorded_by
            )
    except (KpiError, psycopg.Error) as exc:
        raise _fail(exc) from None
    insufficient = sum(v.coverage.quality is Quality.INSUFFICIENT for v in values)
    console.print(f"recorded {len(values)} baselines ({insufficient} on insufficient data)")


@baseline_app.command("show")
def baseline_show(
    kpi: Annotated[str | None, typer.Option(help="one KPI; default: all")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """List the recorded baselines."""
    try:
        with _connect(database_url) as conn:
            recorded = baseline.get_baselines(conn, kpi)
    except psycopg.Error as exc:
        raise _fail(exc) from None
    table = Table()
    for column in ("KPI", "scope", "period", "value", "coverage", "quality", "recorded"):
        table.add_column(column)
    for b in recorded:
        table.add_row(
            b.kpi_id,
            b.scope,
            f"{b.period_start:%Y-%m-%d} .. {b.period_end:%Y-%m-%d}",
            _number(b.value),
            "-" if b.coverage is None else f"{b.coverage:.0%}",
            b.quality,
            f"{b.recorded_at:%Y-%m-%d %H:%M} {b.recorded_by or ''}".strip(),
        )
    console.print(table)


@targets_app.command("set")
def targets_set(
    kpi_id: Annotated[str, typer.Argument(help="e.g. ENE-3")],
    target: Annotated[float, typer.Option(help="met on the good side of this")],
    warning: Annotated[float, typer.Option(help="warning up to this, missed beyond")],
    district: Annotated[str | None, typer.Option(help="default: the whole city")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Override a KPI's target and warning limit for the city or one district."""
    kpi = KPIS.get(kpi_id)
    if kpi is None:
        raise _fail(UnknownKpi(kpi_id))
    try:
        band = checked_band(kpi, target, warning)
    except KpiError as exc:
        raise _fail(exc) from None
    try:
        with _connect(database_url) as conn:
            scope = kpi_targets.set_target(
                conn, kpi_id, district=district, target=band.target, warning=band.warning
            ).scope
    except UnknownDistrictError as exc:
        raise _fail(UnknownDistrict([str(exc)])) from None
    except psycopg.Error as exc:
        raise _fail(exc) from None
    console.print(f"{kpi_id} for {scope}: target {target:g}, warning {warning:g}")


@app.command()
def refresh(database_url: DatabaseOption = None) -> None:
    """Recompute the current day, month and year of every KPI once (the monitor's job)."""
    try:
        with _connect(database_url) as conn:
            changed = engine.refresh_current(conn)
    except (KpiError, psycopg.Error) as exc:
        raise _fail(exc) from None
    console.print(f"current values refreshed; {len(changed)} changed")
