"""Open-data export: readings at a rollup and KPI values for a period, a district and a domain,
as CSV, JSON or Parquet, produced as a stream of byte chunks.

Readings come through a server-side cursor (``ROWS_PER_FETCH`` at a time) and leave as chunks
(Parquet: one row group per ``PARQUET_GROUP_ROWS``), so a year of a city's hourly rollups never
sits in memory, in the CLI (written to a file) or in the API (a streaming response).

Parquet is written with pyarrow rather than polars: its ``ParquetWriter`` appends row groups to
any writable object, which is what streaming a file out chunk by chunk needs (polars writes
a whole frame, or a lazy query, at once); it reads the import's files batch by batch as well.

``level`` ``"district"`` coarsens: per bucket, district, domain and quantity, the number of
sensors, readings, and the mean, min and max; no sensor id, kind or position leaves.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.rows import TupleRow

from services.kpi import engine
from services.kpi.catalog import KPIS

from .errors import ExportError

Conn = psycopg.Connection[TupleRow]

ROWS_PER_FETCH = 5000
PARQUET_GROUP_ROWS = 50_000
_ROWS_PER_CHUNK = 1000


class OutputFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"


MEDIA_TYPES = {
    OutputFormat.CSV: "text/csv",
    OutputFormat.JSON: "application/json",
    OutputFormat.PARQUET: "application/vnd.apache.parquet",
}


class Rollup(StrEnum):
    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"
    DAY = "1d"


class Level(StrEnum):
    SENSOR = "sensor"
    DISTRICT = "district"


@dataclass(frozen=True, slots=True)
class Selection:
    start: datetime
    end: datetime
    district: str | None = None
    domain: str | None = None

    def check(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ExportError("start and end need a UTC offset", "end")
        if self.start >= self.end:
            raise ExportError("start must be before end", "end")


# (name, parquet type) of each column, in order.
Column = tuple[str, str]
SENSOR_COLUMNS: tuple[Column, ...] = (
    ("time", "timestamp"),
    ("sensor", "string"),
    ("district", "string"),
    ("domain", "string"),
    ("kind", "string"),
    ("quantity", "string"),
    ("unit", "string"),
    ("count", "int64"),
    ("mean", "float64"),
    ("min", "float64"),
    ("max", "float64"),
)
DISTRICT_COLUMNS: tuple[Column, ...] = (
    ("time", "timestamp"),
    ("district", "string"),
    ("domain", "string"),
    ("quantity", "string"),
    ("unit", "string"),
    ("sensors", "int64"),
    ("count", "int64"),
    ("mean", "float64"),
    ("min", "float64"),
    ("max", "float64"),
)
KPI_COLUMNS: tuple[Column, ...] = (
    ("kpi_id", "string"),
    ("name", "string"),
    ("domain", "string"),
    ("scope", "string"),
    ("period_start", "timestamp"),
    ("period_end", "timestamp"),
    ("value", "float64"),
    ("unit", "string"),
    ("rating", "string"),
    ("target", "float64"),
    ("warning", "float64"),
    ("better", "string"),
    ("coverage_ratio", "float64"),
    ("coverage_quality", "string"),
    ("sources_used", "int64"),
    ("sources_expected", "int64"),
    ("baseline_value", "float64"),
    ("baseline_change", "float64"),
    ("baseline_change_pct", "float64"),
)

_SOURCE = {
    Rollup.RAW: sql.SQL(
        "SELECT time AS bucket, sensor_key, quantity_key, 1::bigint AS count, value AS sum, "
        "value AS min, value AS max FROM readings WHERE time >= %(start)s AND time < %(end)s"
    ),
    **{
        rollup: sql.SQL(
            "SELECT bucket, sensor_key, quantity_key, count, sum, min, max FROM {} "
            "WHERE bucket >= %(start)s AND bucket < %(end)s"
        ).format(sql.Identifier(f"readings_{rollup.value}"))
        for rollup in (Rollup.MINUTE, Rollup.HOUR, Rollup.DAY)
    },
}
_WHERE = sql.SQL(
    "(%(district)s::text IS NULL OR s.district_id = %(district)s) "
    "AND (%(domain)s::text IS NULL OR s.domain = %(domain)s)"
)
_SENSOR_QUERY = sql.SQL(
    "SELECT r.bucket, s.id, s.district_id, s.domain, s.kind, q.name, q.unit, r.count, "
    "r.sum / nullif(r.count, 0), r.min, r.max FROM ({source}) r "
    "JOIN sensors s ON s.key = r.sensor_key JOIN quantities q ON q.key = r.quantity_key "
    "WHERE {where} ORDER BY r.bucket, s.id, q.name"
)
_DISTRICT_QUERY = sql.SQL(
    "SELECT r.bucket, s.district_id, s.domain, q.name, q.unit, count(DISTINCT r.sensor_key), "
    "sum(r.count)::bigint, sum(r.sum) / nullif(sum(r.count), 0), min(r.min), max(r.max) "
    "FROM ({source}) r JOIN sensors s ON s.key = r.sensor_key "
    "JOIN quantities q ON q.key = r.quantity_key WHERE {where} "
    "GROUP BY r.bucket, s.district_id, s.domain, q.name, q.unit "
    "ORDER BY r.bucket, s.district_id NULLS FIRST, s.domain, q.name"
)


def reading_columns(level: Level) -> tuple[Column, ...]:
    return SENSOR_COLUMNS if level is Level.SENSOR else DISTRICT_COLUMNS


def readings_query(rollup: Rollup, level: Level) -> sql.Composed:
    """The readings export's query (its parameters: :func:`query_params`)."""
    return (_SENSOR_QUERY if level is Level.SENSOR else _DISTRICT_QUERY).format(
        source=_SOURCE[rollup], where=_WHERE
    )


def query_params(selection: Selection) -> dict[str, object]:
    return {
        "start": selection.start,
        "end": selection.end,
        "district": selection.district,
        "domain": selection.domain,
    }


def readings_file(
    conn: Conn, selection: Selection, rollup: Rollup, level: Level, fmt: OutputFormat
) -> Iterator[bytes]:
    """The readings export as the chunks of a file. CSV and JSON are written by PostgreSQL
    (:func:`copied`), byte for byte what :func:`encode` makes of :func:`readings`' rows, several
    times faster (bench/bench_export.py); Parquet by pyarrow from the rows. Runs in its own
    transaction (or savepoint): ``conn`` may be in autocommit mode or not, for CSV and JSON."""
    if fmt is OutputFormat.PARQUET or conn.info.encoding != "utf-8":
        return encode(readings(conn, selection, rollup, level), reading_columns(level), fmt)
    return copied(conn, selection, rollup, level, fmt)


def readings(
    conn: Conn, selection: Selection, rollup: Rollup, level: Level
) -> Iterator[tuple[Any, ...]]:
    """The rows, through a server-side cursor in the connection's transaction (the caller owns
    it: ``conn`` must not be in autocommit mode, a named cursor lives in a transaction)."""
    selection.check()
    with conn.cursor(name="urbanpulse_export") as cursor:
        cursor.itersize = ROWS_PER_FETCH
        cursor.execute(readings_query(rollup, level), query_params(selection))
        yield from cursor


def kpi_rows(
    conn: Conn, selection: Selection, grain: str | None = None
) -> Iterator[tuple[Any, ...]]:
    """Every computed KPI of the domain (or all), per bucket of ``grain`` (None: the whole
    period), for the district (or every district and the city), rated, with coverage and the
    recorded baseline. Raises ``ExportError`` for a bad period, domain or district."""
    selection.check()
    kpi_ids = [
        kpi_id
        for kpi_id in engine.computed_kpis()
        if selection.domain is None or KPIS[kpi_id].domain.value == selection.domain
    ]
    if selection.domain is not None and not kpi_ids:
        domains = sorted({KPIS[k].domain.value for k in engine.computed_kpis()})
        raise ExportError(f"no KPI of domain {selection.domain!r}; one of {', '.join(domains)}")
    districts = [selection.district] if selection.district else None
    for kpi_id in kpi_ids:
        try:
            values = engine.compute(
                conn,
                kpi_id,
                selection.start,
                selection.end,
                grain=grain,
                districts=districts,
                include_city=selection.district is None,
            )
        except engine.KpiError as exc:
            raise ExportError(str(exc)) from None
        for value in values:
            baseline = value.baseline
            yield (
                value.kpi_id,
                KPIS[value.kpi_id].name,
                KPIS[value.kpi_id].domain.value,
                value.scope,
                value.period_start,
                value.period_end,
                value.value,
                value.unit,
                value.rating.value,
                value.target,
                value.warning,
                value.better.value,
                value.coverage.ratio,
                value.coverage.quality.value,
                value.coverage.sources_used,
                value.coverage.sources_expected,
                None if baseline is None else baseline.value,
                None if baseline is None else baseline.change,
                None if baseline is None else baseline.change_pct,
            )


def encode(
    rows: Iterable[tuple[Any, ...]], columns: Sequence[Column], fmt: OutputFormat
) -> Iterator[bytes]:
    """The rows as chunks of a CSV, JSON (an array of objects) or Parquet file."""
    if fmt is OutputFormat.CSV:
        return _csv(rows, columns)
    if fmt is OutputFormat.JSON:
        return _json(rows, columns)
    return _parquet(rows, columns)


def _cell(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv(rows: Iterable[tuple[Any, ...]], columns: Sequence[Column]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in columns])
    for count, row in enumerate(rows, start=1):
        writer.writerow(["" if v is None else _cell(v) for v in row])
        if count % _ROWS_PER_CHUNK == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def _json(rows: Iterable[tuple[Any, ...]], columns: Sequence[Column]) -> Iterator[bytes]:
    names = [name for name, _ in columns]
    # Rows leave in chunks, as the CSV's do: a chunk a row made the API send one body part a
    # row, at a fifth of the CSV's rate (bench/bench_export.py).
    parts: list[str] = ["["]
    separator = "\n"
    for count, row in enumerate(rows, start=1):
        item = {name: _cell(v) for name, v in zip(names, row, strict=True)}
        parts.append(separator + json.dumps(item, separators=(",", ":")))
        separator = ",\n"
        if count % _ROWS_PER_CHUNK == 0:
            yield "".join(parts).encode()
            parts.clear()
    parts.append("\n]\n")
    yield "".join(parts).encode()


# --- CSV and JSON written by PostgreSQL -----------------------------------------------------
#
# Through the server-side cursor, a tuple a row, then csv or json, the readings left at a sixth
# of the rate PostgreSQL alone writes them as CSV (bench/bench_export.py). COPY writes each row
# as the text encode() makes of it; Python gathers the rows into chunks and corrects, exactly,
# the few values PostgreSQL cannot write as Python does, where (rarely) they occur.

# Marks a float PostgreSQL cannot write as repr() does (see _FLOAT). Never raw in a JSON line
# (to_json escapes control characters); raw in a CSV text field it only sends that chunk
# through the exact, slower, rewrite.
_MARK = b"\x01"
# A float as repr() writes it (what csv and json write; encode() writes NaN and the infinities
# as null). Below 1e15 PostgreSQL's shortest round-trip text (extra_float_digits 1) is repr's
# but for a whole number's ".0"; from 1e15 on repr keeps fixed notation one power of ten
# longer, and PostgreSQL's text of a whole number past 2**53 is not always the shortest: those
# leave marked, their text (exact) read back by float() and written by repr().
_FLOAT = (
    "CASE WHEN {c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL "
    "WHEN abs({c}) >= 1e15 THEN chr(1) || {c}::text "
    "WHEN {c} = trunc({c}) THEN {c}::text || '.0' ELSE {c}::text END"
)
# A timestamptz as datetime.isoformat() writes it in the session's time zone (psycopg's): the
# microseconds only if any, the offset's seconds only if any (local mean time, before 1900).
_TIME = (
    "replace(to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS.USTZH:TZM'), '.000000', '') "
    "|| CASE WHEN mod(extract(timezone FROM {c})::int, 60) = 0 THEN '' "
    "ELSE ':' || to_char(mod(abs(extract(timezone FROM {c})::int), 60), 'FM00') END"
)
# csv leaves NULL and '' both empty; COPY quotes ''.
_CSV_CELL = {"timestamp": _TIME, "string": "nullif({c}, '')", "int64": "{c}", "float64": _FLOAT}
_JSON_VALUE = {
    "timestamp": "'\"' || " + _TIME + " || '\"'",
    "string": "to_json({c})::text",
    "int64": "{c}::text",
    "float64": _FLOAT,
}


def copy_statement(rollup: Rollup, level: Level, fmt: OutputFormat) -> sql.Composed:
    """COPY of the readings export's query, each row written as :func:`encode` writes it (CSV
    without the header, JSON an object a line), but for the marked floats (see ``_FLOAT``)."""
    columns = reading_columns(level)
    names = [sql.Identifier(f"c{i}") for i in range(len(columns))]
    cells = [
        sql.SQL((_CSV_CELL if fmt is OutputFormat.CSV else _JSON_VALUE)[kind]).format(c=name)
        for name, (_, kind) in zip(names, columns, strict=True)
    ]
    rows = sql.SQL("({query}) AS q({names})").format(
        query=readings_query(rollup, level), names=sql.SQL(", ").join(names)
    )
    if fmt is OutputFormat.CSV:
        return sql.SQL("COPY (SELECT {cells} FROM {rows}) TO STDOUT (FORMAT csv)").format(
            cells=sql.SQL(", ").join(cells), rows=rows
        )
    members = [
        sql.SQL("{key} || coalesce({value}, 'null')").format(
            key=sql.Literal(("{" if i == 0 else ",") + json.dumps(name) + ":"), value=cell
        )
        for i, ((name, _), cell) in enumerate(zip(columns, cells, strict=True))
    ]
    # CSV with a quote and a delimiter a JSON line never holds raw: each line as it is (COPY's
    # text format would double every backslash of the JSON's escapes).
    return sql.SQL(
        "COPY (SELECT {line} || '}}' FROM {rows}) TO STDOUT "
        "(FORMAT csv, QUOTE e'\\x02', DELIMITER e'\\x03')"
    ).format(line=sql.SQL(" || ").join(members), rows=rows)


def copied(
    conn: Conn, selection: Selection, rollup: Rollup, level: Level, fmt: OutputFormat
) -> Generator[bytes, None, None]:
    """The readings export in CSV or JSON, written by PostgreSQL (COPY) in a transaction (or a
    savepoint) of its own. Closing the iterator early cancels the query."""
    selection.check()
    columns = reading_columns(level)
    # Float text and time zone as psycopg reads them (it falls back to UTC for a zone Python
    # does not know).
    zone = getattr(conn.info.timezone, "key", "UTC")
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('extra_float_digits', '1', true), set_config('TimeZone', %s, true)",
            (zone,),
        )
        with cursor.copy(copy_statement(rollup, level, fmt), query_params(selection)) as copy:
            blocks = _blocks(copy)
            if fmt is OutputFormat.CSV:
                yield (",".join(name for name, _ in columns) + "\n").encode()
                floats = [i for i, (_, kind) in enumerate(columns) if kind == "float64"]
                for block in blocks:
                    yield _csv_exact(block, floats) if _MARK in block or b"\r" in block else block
            else:
                yield b"["
                separator = b"\n"
                for block in blocks:
                    yield separator + _json_exact(block[:-1]).replace(b"\n", b",\n")
                    separator = b",\n"
                yield b"\n]\n"


def _blocks(copy: psycopg.Copy) -> Iterator[bytes]:
    """COPY's rows (a message each), _ROWS_PER_CHUNK at a time."""
    rows: list[Buffer] = []
    for row in copy:
        rows.append(row)
        if len(rows) >= _ROWS_PER_CHUNK:
            yield b"".join(rows)
            rows.clear()
    if rows:
        yield b"".join(rows)


def _csv_exact(block: bytes, floats: Sequence[int]) -> bytes:
    """Whole CSV rows of COPY's as csv writes them: the marked floats, and a field with a
    carriage return but no comma, quote or newline, which COPY quotes and csv does not."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(io.StringIO(block.decode(), newline="")):
        for i in floats:
            if row[i].startswith("\x01"):
                row[i] = repr(float(row[i][1:]))
        writer.writerow(row)
    return out.getvalue().encode()


_MARKED = re.compile(rb"\x01([^,}]+)")
# Every ASCII byte but DEL as a space: what is left between the spaces is the runs to escape.
_ASCII_BLANK = bytes(byte if byte >= 0x7F else 0x20 for byte in range(256))


def _json_exact(lines: bytes) -> bytes:
    """JSON lines of COPY's as json.dumps writes them: the marked floats, and characters past
    ASCII (and DEL) escaped, which to_json leaves as they are."""
    if _MARK in lines:
        lines = _MARKED.sub(lambda m: repr(float(m[1])).encode(), lines)
    if lines.isascii() and b"\x7f" not in lines:
        return lines
    # A few distinct runs (units, names) recur on many rows: each is replaced wherever it is, a
    # pass of bytes.replace (a regular expression's scan, and a callback a match, took half a
    # JSON export's time). The longest first: a run can recur inside a longer one ("µ" in
    # "µ³"), which is then already escaped.
    runs = set(lines.translate(_ASCII_BLANK).split())
    if len(runs) > _FEW_RUNS:
        # Many distinct runs (names in Greek, Cyrillic, CJK...): one scan, not one a run.
        return _PAST_ASCII.sub(lambda m: _escaped(m[0]), lines)
    for run in sorted(runs, key=len, reverse=True):
        lines = lines.replace(run, _escaped(run))
    return lines


# Past this many distinct runs in a block, a scan per run costs more than one regex scan.
_FEW_RUNS = 16
_PAST_ASCII = re.compile(rb"[\x7f-\xff]+")


@functools.lru_cache(maxsize=1024)
def _escaped(run: bytes) -> bytes:
    return json.dumps(run.decode())[1:-1].encode()


class _Sink(io.RawIOBase):
    """What pyarrow writes the Parquet file into: taken out, chunk by chunk, as it grows."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.size

    def take(self) -> bytes:
        chunk = b"".join(self.parts)
        self.parts.clear()
        return chunk


def _parquet(rows: Iterable[tuple[Any, ...]], columns: Sequence[Column]) -> Iterator[bytes]:
    import pyarrow as pa  # type: ignore[import-untyped]  # noqa: PLC0415 - see sources._parquet
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415

    types: dict[str, Callable[[], Any]] = {
        "timestamp": lambda: pa.timestamp("us", tz="UTC"),
        "string": pa.string,
        "int64": pa.int64,
        "float64": pa.float64,
    }
    schema = pa.schema([(name, types[kind]()) for name, kind in columns])
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        group: list[tuple[Any, ...]] = []
        for row in rows:
            group.append(row)
            if len(group) >= PARQUET_GROUP_ROWS:
                writer.write_batch(_batch(pa, schema, group))
                group.clear()
                yield sink.take()
        if group:
            writer.write_batch(_batch(pa, schema, group))
    finally:
        writer.close()
    yield sink.take()


def _batch(pa: Any, schema: Any, rows: list[tuple[Any, ...]]) -> Any:
    columns = list(zip(*rows, strict=True))
    return pa.record_batch(
        [
            pa.array(list(values), type=field.type)
            for values, field in zip(columns, schema, strict=True)
        ],
        schema=schema,
    )
