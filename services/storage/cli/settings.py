"""``urbanpulse city`` and ``urbanpulse district``: read and set the settings the KPIs use.

``urbanpulse city show`` lists every city setting with its value, unit and whether it is the
default; ``urbanpulse city set sustained_outage_s "5 min"`` sets one, ``unset`` returns it to
the default. ``urbanpulse district show ID`` lists the settings a district may override (its
own value or the city's), ``district set ID overflow_threshold "90 %"`` overrides one for the
district, ``district unset`` drops the override. Values take a unit (``services.storage.measures``),
peak periods are ``"07:00-09:30,16:00-18:30"`` and road classes ``"major,arterial"``; a value
that starts with ``[`` or ``{`` is read as JSON. A refused value exits with status 2 and the
reason.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from services.cli_support import settings_for_command

from .. import city_settings as cs
from ..urls import libpq_url

city_app = typer.Typer(
    help="City settings the KPIs use: timezone, peak periods, thresholds...", no_args_is_help=True
)
district_app = typer.Typer(
    help="A district's overrides of the city settings (peak periods, overflow threshold, f_grid).",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
Name = Annotated[str, typer.Argument(help=f"one of {', '.join(cs.SETTINGS)}")]
ValueArgument = Annotated[
    str, typer.Argument(help='e.g. "5 min", "90 %", "07:00-09:30,16:00-18:30", or JSON')
]
DistrictArgument = Annotated[str, typer.Argument(help="the district's id")]


def shown(name: str, value: Any) -> str:
    """A setting's value for people: units spelled out."""
    unit = cs.SETTINGS[name].unit
    if name == "peak_periods":
        return ", ".join(f"{start}-{end}" for start, end in value)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if unit == "/":
        return f"{value:g} ({value * 100:g} %)"
    if unit == "s":
        return f"{value:g} s ({value / 60:g} min)"
    return str(value)


def _raw(text: str) -> Any:
    if text.lstrip().startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise _refused("value", f"not JSON: {exc}") from None
    return text


def _refused(name: str, message: str) -> typer.Exit:
    errors.print(f"{name}: {message}", markup=False, soft_wrap=True)
    return typer.Exit(2)


def _connect(database_url: str | None) -> psycopg.Connection[tuple[object, ...]]:
    _, url = settings_for_command(database_url)
    return psycopg.connect(libpq_url(url))


def _print(values: list[cs.Value], *, as_json: bool, title: str) -> None:
    if as_json:
        rows = [
            {
                "name": v.name,
                "value": v.value,
                "unit": cs.SETTINGS[v.name].unit or None,
                "source": v.source,
            }
            for v in values
        ]
        console.print_json(json.dumps(rows))
        return
    table = Table(title=title)
    for column in ("setting", "value", "from", "meaning"):
        table.add_column(column)
    for v in values:
        table.add_row(v.name, shown(v.name, v.value), v.source, cs.SETTINGS[v.name].description)
    console.print(table)


def _run(database_url: str | None, action: Any) -> Any:
    try:
        with _connect(database_url) as conn:
            return action(conn)
    except cs.SettingError as exc:
        raise _refused(exc.name, str(exc)) from None
    except cs.UnknownDistrictError as exc:
        raise _refused("district", f"no district {exc.args[0]!r}") from None
    except psycopg.Error as exc:
        errors.print(f"database error: {exc}", markup=False)
        raise typer.Exit(1) from None


@city_app.command("show")
def city_show(as_json: JsonOption = False, database_url: DatabaseOption = None) -> None:
    """Every city setting: its value, where it comes from (set or default) and what it means."""
    values = _run(database_url, cs.city_values)
    _print(values, as_json=as_json, title="City settings")


@city_app.command("set")
def city_set(name: Name, value: ValueArgument, database_url: DatabaseOption = None) -> None:
    """Set a city setting; a number takes a unit ("5 min", "30 %")."""
    raw = _raw(value)
    result = _run(database_url, lambda conn: cs.set_city(conn, name, raw))
    console.print(f"{name} = {shown(name, result.value)}", markup=False)


@city_app.command("unset")
def city_unset(name: Name, database_url: DatabaseOption = None) -> None:
    """Return a city setting to its default."""
    result = _run(database_url, lambda conn: cs.unset_city(conn, name))
    console.print(f"{name} = {shown(name, result.value)} (default)", markup=False)


@district_app.command("show")
def district_show(
    district_id: DistrictArgument, as_json: JsonOption = False, database_url: DatabaseOption = None
) -> None:
    """The settings a district may override: its own value, else the city's."""
    values = _run(database_url, lambda conn: cs.district_values(conn, district_id))
    _print(values, as_json=as_json, title=f"Settings of district {district_id}")


@district_app.command("set")
def district_set(
    district_id: DistrictArgument,
    name: Name,
    value: ValueArgument,
    database_url: DatabaseOption = None,
) -> None:
    """Override a city setting for one district (peak periods, overflow threshold, f_grid)."""
    raw = _raw(value)
    result = _run(database_url, lambda conn: cs.set_district(conn, district_id, name, raw))
    console.print(f"{district_id}: {name} = {shown(name, result.value)}", markup=False)


@district_app.command("unset")
def district_unset(
    district_id: DistrictArgument, name: Name, database_url: DatabaseOption = None
) -> None:
    """Drop a district's override: the city's value applies again."""
    result = _run(database_url, lambda conn: cs.unset_district(conn, district_id, name))
    console.print(f"{district_id}: {name} = {shown(name, result.value)} (the city's)", markup=False)
