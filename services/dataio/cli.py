"""``urbanpulse import`` (history into the platform) and ``urbanpulse export`` (open data out).

Thin shells: the work is in ``importer``, ``exporter`` and ``dcat``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli_support import settings_for_command
from services.storage.urls import libpq_url

from . import bundle, exporter, importer
from .errors import ExportError, SourceError
from .exporter import Level, OutputFormat, Rollup, Selection
from .sources import Format, guess_format, parse_mapping, zone

import_app = typer.Typer(help="Import history: CSV, JSON lines of SenML packs, Parquet.")
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]


def _fail(message: str, status: int = 1) -> typer.Exit:
    errors.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(status)


@import_app.command("import")
def import_command(  # noqa: PLR0917 - typer maps options to parameters
    path: Annotated[Path, typer.Argument(help="the file", exists=True, dir_okay=False)],
    fmt: Annotated[
        Format | None, typer.Option("--format", help="default: from the file name's suffix")
    ] = None,
    mapping: Annotated[
        str | None,
        typer.Option(
            "--map",
            help="column names of another layout: sensor=device_id,time=ts,value=v "
            "(columns: sensor, quantity, time, value, unit)",
        ),
    ] = None,
    timezone: Annotated[str, typer.Option(help="zone of times without an offset")] = "UTC",
    batch: Annotated[
        int, typer.Option(min=1, help="records per transaction (and checkpoint)")
    ] = importer.BATCH_RECORDS,
    again: Annotated[
        bool, typer.Option("--again", help="import a file already imported once more, whole")
    ] = False,
    refresh: Annotated[
        bool, typer.Option(help="refresh rollups and current KPIs for the imported span")
    ] = True,
    kpis: Annotated[
        bool, typer.Option(help="recompute the current KPI values (else the monitor does)")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Import readings with their original times through the live path's validation: bad
    records go to the quarantine (topic import:<file>:<line>; `urbanpulse quarantine replay`
    stores them once their cause is fixed), good ones are written once however often the file
    is imported; an interrupted import resumes where it stopped."""
    settings, url = settings_for_command(database_url)
    try:
        chosen = fmt or guess_format(path.name)
        columns = parse_mapping(mapping)
        zone(timezone)
    except SourceError as exc:
        raise _fail(str(exc), 2) from None
    size = os.path.getsize(path)
    with (
        path.open("rb") as stream,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[records]} records"),
            TimeElapsedColumn(),
            console=errors,
            disable=as_json,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task(path.name, total=_lines(path, chosen, size), records=0)

        def advance(line: int, records: int) -> None:
            bar.update(task, completed=line, records=records)

        try:
            with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
                result = importer.import_file(
                    conn,
                    stream,
                    chosen,
                    source=path.name,
                    policy=importer.import_policy(settings),
                    mapping=columns,
                    timezone=timezone,
                    batch_records=batch,
                    max_entries_per_unit=settings.quarantine_max_entries_per_message,
                    progress=advance,
                    again=again,
                    refresh=refresh,
                    kpis=kpis,
                )
        except SourceError as exc:
            raise _fail(f"{path}: {exc}", 2) from None
        except psycopg.Error as exc:
            raise _fail(str(exc).strip()) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    _show(result)


def _lines(path: Path, fmt: Format, size: int) -> int | None:
    """The progress bar's total: the file's lines (units are numbered by line) or Parquet rows."""
    if fmt is Format.PARQUET:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, ValueError):  # the import itself says why the file is unreadable
            return None
    with path.open("rb") as stream:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
    return count + (1 if size else 0)


def _show(result: importer.ImportResult) -> None:
    if result.already_done:
        console.print(
            f"{result.source} was imported before (run {result.run_id[:12]}): nothing written; "
            "--again imports it once more"
        )
    table = Table(title=f"import of {result.source}", show_header=False)
    for name, value in (
        ("lines or rows read", result.units),
        ("resumed after line", result.resumed_at or "-"),
        ("records", result.records),
        ("stored", result.stored),
        ("already stored", result.duplicates),
        ("conflicts (quarantined)", result.conflicts),
        ("quarantine entries", result.quarantined),
        ("span", " .. ".join(t.isoformat() for t in result.span) if result.span else "-"),
        ("current KPIs refreshed", "yes" if result.kpis_refreshed else "no"),
        ("seconds", f"{result.seconds:.1f}"),
    ):
        table.add_row(name, str(value))
    console.print(table)
    if result.quarantined:
        console.print(
            "see them with: urbanpulse quarantine list; once their cause is fixed (a sensor "
            "registered), store them with: urbanpulse quarantine replay --reason REASON"
        )


export_app = typer.Typer(
    help="Export open data: readings at a rollup, KPI values, a DCAT-AP described bundle.",
    no_args_is_help=True,
)

StartOption = Annotated[str, typer.Option(help="ISO 8601 start, inclusive (UTC if no offset)")]
EndOption = Annotated[str, typer.Option(help="ISO 8601 end, exclusive (UTC if no offset)")]
DistrictOption = Annotated[str | None, typer.Option(help="one district id (default: all)")]
DomainOption = Annotated[
    str | None, typer.Option(help="energy, water, waste, traffic, environment or ict")
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="file format")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="default: stdout")]


def _selection(start: str, end: str, district: str | None, domain: str | None) -> Selection:
    try:
        moments = [datetime.fromisoformat(text) for text in (start, end)]
    except ValueError as exc:
        raise typer.BadParameter(f"expected ISO 8601 times: {exc}") from None
    first, last = (m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments)
    selection = Selection(first, last, district, domain)
    try:
        selection.check()
    except ExportError as exc:
        raise typer.BadParameter(str(exc)) from None
    return selection


@contextmanager
def _connect(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection; a bad request (ExportError) ends the command with status 2, a database
    error with status 1, each as one line."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
            yield conn
    except ExportError as exc:
        raise _fail(str(exc), 2) from None
    except psycopg.Error as exc:
        raise _fail(str(exc).strip()) from None


def _write(output: Path | None, chunks: Iterator[bytes]) -> None:
    if output is None:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    with output.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)


@export_app.command("readings")
def export_readings(  # noqa: PLR0917 - typer maps options to parameters
    start: StartOption,
    end: EndOption,
    district: DistrictOption = None,
    domain: DomainOption = None,
    rollup: Annotated[Rollup, typer.Option(help="raw readings or a rollup")] = Rollup.HOUR,
    level: Annotated[Level, typer.Option(help="per sensor, or per district")] = Level.SENSOR,
    fmt: FormatOption = OutputFormat.CSV,
    output: OutputOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Readings (count, mean, min, max per bucket) of a period, streamed to a file."""
    _, url = settings_for_command(database_url)
    selection = _selection(start, end, district, domain)
    with _connect(url) as conn:
        _write(output, exporter.readings_file(conn, selection, rollup, level, fmt))


@export_app.command("kpis")
def export_kpis(  # noqa: PLR0917 - typer maps options to parameters
    start: StartOption,
    end: EndOption,
    district: DistrictOption = None,
    domain: DomainOption = None,
    grain: Annotated[
        str | None, typer.Option(help="hour, day, week, month or year (default: the period)")
    ] = None,
    fmt: FormatOption = OutputFormat.CSV,
    output: OutputOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """KPI values of a period (rating, coverage, baseline), per district and for the city."""
    _, url = settings_for_command(database_url)
    selection = _selection(start, end, district, domain)
    with _connect(url) as conn:
        rows = list(exporter.kpi_rows(conn, selection, grain))
    _write(output, exporter.encode(rows, exporter.KPI_COLUMNS, fmt))


@export_app.command("bundle")
def export_bundle(  # noqa: PLR0917 - typer maps options to parameters
    directory: Annotated[Path, typer.Argument(help="where the files and dcat.jsonld go")],
    start: StartOption,
    end: EndOption,
    district: DistrictOption = None,
    domain: DomainOption = None,
    rollup: Annotated[Rollup, typer.Option(help="the readings' rollup")] = Rollup.HOUR,
    fmt: FormatOption = OutputFormat.CSV,
    base_url: Annotated[
        str, typer.Option(help="URL the files will be published under (default: relative)")
    ] = "",
    database_url: DatabaseOption = None,
) -> None:
    """An open-data bundle: readings at the level URBANPULSE_OPEN_DATA_SENSOR_LEVEL allows,
    KPI values, and their DCAT-AP description (dcat.jsonld) for a CKAN portal."""
    settings, url = settings_for_command(database_url)
    selection = _selection(start, end, district, domain)
    with _connect(url) as conn:
        description = bundle.build(
            conn,
            directory,
            selection,
            sensor_level=settings.open_data_sensor_level,
            title=settings.open_data_title,
            publisher=settings.open_data_publisher,
            licence=settings.open_data_licence,
            fmt=fmt,
            rollup=rollup,
            base_url=base_url,
        )
    files = [d["dcat:downloadURL"]["@id"] for d in description["dcat:distribution"]]
    console.print(f"wrote {', '.join(files)} and dcat.jsonld to {directory}")
