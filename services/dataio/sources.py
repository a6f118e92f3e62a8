"""Reading import files into SenML packs, one *unit* (a CSV row, a JSON line, a Parquet row) at
a time, each with its line (or row) number and raw bytes for the quarantine.

No database here. A JSON line is a SenML pack, decoded later by the worker's codec. A tabular
row (CSV, Parquet) becomes one resolved SenML ``Record`` (name ``<sensor>/<quantity>``, absolute
time, value, unit), what the codec makes of a gateway's record, for the same validator; a row
that cannot become one (an empty cell, a value that is not a finite number, a time that is not
a time) is a ``Unit`` with an ``error`` and goes to the quarantine as ``bad_row``.

Columns (CSV header, Parquet schema): ``sensor, quantity, time, value, unit`` (``unit`` may be
absent or empty: the quantity's canonical unit). ``time`` is ISO 8601 (naive: in ``timezone``)
or Unix epoch seconds; a Parquet timestamp column is taken as is. A mapping renames columns:
``{"sensor": "device_id", "time": "ts"}`` reads the sensor from ``device_id``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from gateway.names import reading_name
from gateway.senml import RELATIVE_TIME_LIMIT, Record

from .errors import SourceError

COLUMNS = ("sensor", "quantity", "time", "value", "unit")
REQUIRED = ("sensor", "quantity", "time", "value")
BAD_ROW = "bad_row"  # a quarantine reason: the row could not become a SenML record
# Rows converted (and Parquet rows read) at a time: bounded memory, whatever the file.
TABULAR_BATCH_ROWS = 8192
JSONL_CHUNK_LINES = 1000


class Format(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, once per row
class Unit:
    """One line or row of the file: a SenML pack to decode (JSON lines), a record (CSV and
    Parquet rows), or why there is neither."""

    line: int  # 1-based; for CSV the file's line where the row starts, for Parquet the row
    cells: bytes | Sequence[str] | Mapping[str, Any]  # as read: a JSON line, CSV cells, a row
    pack: bytes | None = None
    record: Record | None = None
    error: str | None = None

    @property
    def raw(self) -> bytes:
        """The unit's bytes for the quarantine (a row written back as CSV or JSON)."""
        cells = self.cells
        if isinstance(cells, bytes):
            return cells
        if isinstance(cells, Mapping):
            return msgspec.json.encode(cells)
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(cells)
        return out.getvalue().encode()


def guess_format(name: str) -> Format:
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return Format.JSONL
    if suffix in (".parquet", ".pq"):
        return Format.PARQUET
    if suffix in (".csv", ".txt"):
        return Format.CSV
    raise SourceError(f"cannot tell the format of {name!r}: give --format csv, jsonl or parquet")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; SourceError when there is none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Rome)", "timezone"
        ) from None


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"sensor=device_id,time=ts"`` as ``{"sensor": "device_id", "time": "ts"}``."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        ours, sep, theirs = part.partition("=")
        ours, theirs = ours.strip(), theirs.strip()
        if not sep or ours not in COLUMNS or not theirs:
            raise SourceError(
                f"bad mapping {part!r}: write <column>=<name in the file>, column one of "
                + ", ".join(COLUMNS),
                "map",
            )
        mapping[ours] = theirs
    return mapping


def units(
    stream: BinaryIO,
    fmt: Format,
    *,
    mapping: Mapping[str, str] | None = None,
    timezone: str = "UTC",
) -> Iterator[Unit]:
    """The file's units in order. Raises ``SourceError`` when the file as a whole is unusable."""
    for chunk in chunks(stream, fmt, mapping=mapping, timezone=timezone):
        yield from chunk


def chunks(
    stream: BinaryIO,
    fmt: Format,
    *,
    mapping: Mapping[str, str] | None = None,
    timezone: str = "UTC",
) -> Iterator[list[Unit]]:
    """The file's units in order, a list at a time (a generator step per row costs more than
    converting the row: bench/bench_import.py)."""
    if fmt is Format.JSONL:
        return _jsonl(stream)
    row = _Row(dict(mapping or {}), zone(timezone))
    if fmt is Format.CSV:
        return _csv(stream, row)
    return _parquet(stream, row)


def _jsonl(stream: BinaryIO) -> Iterator[list[Unit]]:
    chunk: list[Unit] = []
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if text:  # a blank line (the last one, often) is nothing to import
            chunk.append(Unit(number, text, pack=text))
            if len(chunk) >= JSONL_CHUNK_LINES:
                yield chunk
                chunk = []
    yield chunk


class _Row:
    """A tabular row to one SenML record (the columns looked up by position, once)."""

    def __init__(self, mapping: dict[str, str], zone: ZoneInfo) -> None:
        self.names = {column: mapping.get(column, column) for column in COLUMNS}
        self.zone = zone
        self.at: dict[str, int | None] = {}

    def check_header(self, header: Sequence[str]) -> None:
        missing = [self.names[c] for c in REQUIRED if self.names[c] not in header]
        if missing:
            raise SourceError(
                f"no column {', '.join(map(repr, missing))} (the file has "
                f"{', '.join(map(repr, header))}); map columns with --map column=name"
            )
        self.at = {
            c: header.index(self.names[c]) if self.names[c] in header else None for c in COLUMNS
        }

    def record(self, cells: Sequence[Any]) -> tuple[Record | None, str | None]:
        """The row's record, or why it has none. ``cells`` in the header's order."""
        at = self.at
        sensor, quantity = cells[at["sensor"]], cells[at["quantity"]]  # type: ignore[index]
        if not sensor or not quantity:
            return None, "sensor and quantity must not be empty"
        time, error = self._time(cells[at["time"]])  # type: ignore[index]
        if error is not None:
            return None, error
        value = cells[at["value"]]  # type: ignore[index]
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None, f"value {value!r} is not a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"value {value!r} is not a number"
        if not math.isfinite(value):
            return None, f"value {value!r} is not a finite number"
        unit = cells[at["unit"]] if at["unit"] is not None else None
        # The name is checked as a gateway's is, by the validator (<sensor_id>/<quantity>,
        # the sensor registered, the quantity one its kind measures).
        return Record(
            reading_name(str(sensor), str(quantity)),
            time,
            str(unit) if unit else None,
            float(value),
        ), None

    def _time(self, cell: object) -> tuple[float, str | None]:
        if isinstance(cell, datetime):
            moment = cell if cell.tzinfo else cell.replace(tzinfo=self.zone)
            seconds = moment.timestamp()
        elif isinstance(cell, int | float) and not isinstance(cell, bool):
            seconds = float(cell)
        elif isinstance(cell, str) and cell.strip():
            text = cell.strip()
            try:
                seconds = float(text)
            except ValueError:
                try:
                    moment = datetime.fromisoformat(text)
                except ValueError:
                    return 0.0, f"time {text!r} is neither ISO 8601 nor epoch seconds"
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=self.zone)
                seconds = moment.timestamp()
        else:
            return 0.0, f"time {cell!r} is missing or not a time"
        # SenML reads a time below 2**28 as relative to now (RFC 8428 §4.5.3): history
        # cannot mean that, so refuse it rather than store it as today.
        if not math.isfinite(seconds) or seconds < RELATIVE_TIME_LIMIT:
            return 0.0, f"time {cell!r} is before 1978-07-04 (SenML would read it as relative)"
        return seconds, None


def _csv(stream: BinaryIO, row: _Row) -> Iterator[list[Unit]]:
    """CSV rows, a chunk of lines at a time parsed by pyarrow (C++) while no line holds a
    quote; from the first quote on, the csv module, since a quoted field may hold a line break
    (and lines then stop being rows). Either way a unit's line is the file's line."""
    lines = iter(stream)
    first = next(lines, None)
    if first is None:
        raise SourceError("the CSV file is empty: it needs a header line")
    try:
        header_text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"not a UTF-8 CSV file: {exc}") from None
    try:
        header = [h.strip() for h in next(csv.reader([header_text.rstrip("\r\n")]), [])]
    except csv.Error as exc:  # e.g. a bare carriage return inside the header line
        raise SourceError(f"the CSV header line cannot be read: {exc}") from None
    row.check_header(header)
    number = 1
    numbers: list[int] = []
    raws: list[bytes] = []
    for text in lines:
        number += 1
        if b'"' in text:
            yield _arrow_chunk(row, header, numbers, raws)
            yield from _csv_rows(row, header, itertools.chain([text], lines), number)
            return
        raw = text.rstrip(b"\r\n")
        if raw.strip():
            numbers.append(number)
            raws.append(raw)
            if len(raws) >= TABULAR_BATCH_ROWS:
                yield _arrow_chunk(row, header, numbers, raws)
                numbers, raws = [], []
    yield _arrow_chunk(row, header, numbers, raws)


def _arrow_chunk(row: _Row, header: list[str], numbers: list[int], raws: list[bytes]) -> list[Unit]:
    if not raws:
        return []
    pa = _arrow()
    import pyarrow.csv as pcsv  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        table = pcsv.read_csv(
            io.BytesIO(b"\n".join(raws)),
            read_options=pcsv.ReadOptions(column_names=header, block_size=1 << 26),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
            ),
        )
        if table.num_rows != len(raws):
            raise ValueError("rows and lines differ")
    except (pa.ArrowInvalid, ValueError):
        # A row of another width, or bytes that are not UTF-8: line by line says which.
        units: list[Unit] = []
        for number, raw in zip(numbers, raws, strict=True):
            try:
                cells = next(csv.reader([raw.decode("utf-8")]))
            except (UnicodeDecodeError, csv.Error) as exc:
                units.append(Unit(number, raw, error=f"not UTF-8 CSV: {exc}"))
                continue
            if len(cells) != len(header):
                units.append(
                    Unit(number, raw, error=f"{len(cells)} values for {len(header)} columns")
                )
                continue
            record, error = row.record(cells)
            units.append(Unit(number, raw, record=record, error=error))
        return units
    at = row.at
    column = {name: table.column(index) for name, index in at.items() if index is not None}
    fast = _records(
        row,
        sensors=column["sensor"],
        quantities=column["quantity"],
        times=column["time"],
        values=column["value"],
        units=column["unit"].to_pylist() if "unit" in column else None,
    )
    out = [
        Unit(number, raw, None, record)
        for number, raw, record in zip(numbers, raws, fast or [None] * len(raws), strict=True)
    ]
    for unit in out:
        if unit.record is None:
            cells = next(csv.reader([unit.cells.decode()]))  # type: ignore[union-attr]
            unit.record, unit.error = row.record(cells)
    return out


def _csv_rows(
    row: _Row, header: list[str], lines: Iterable[bytes], first: int
) -> Iterator[list[Unit]]:
    """The rest of a CSV file through the csv module; ``first``: the file's line of the first
    of ``lines``. Bytes that are not UTF-8 are replaced here (the row then fails validation)."""
    reader = csv.reader(line.decode("utf-8", "replace") for line in lines)
    width = len(header)
    start = first
    numbers: list[int] = []
    rows: list[list[str]] = []
    while True:
        # One try around the loop, not around each row: a for loop over the reader is the
        # fastest way through it; an error ends the loop, which then goes on after it.
        try:
            for cells in reader:
                line, start = start, first + reader.line_num
                if len(cells) == width:
                    numbers.append(line)
                    rows.append(cells)
                    if len(rows) >= TABULAR_BATCH_ROWS:
                        yield _tabular(row, numbers, rows)
                        numbers, rows = [], []
                elif cells:
                    yield _tabular(row, numbers, rows)
                    numbers, rows = [], []
                    yield [Unit(line, cells, error=f"{len(cells)} values for {width} columns")]
        except (csv.Error, UnicodeDecodeError) as exc:
            yield _tabular(row, numbers, rows)
            numbers, rows = [], []
            yield [Unit(start, b"", error=f"not CSV: {exc}")]
            start = first + reader.line_num
            continue
        break
    yield _tabular(row, numbers, rows)


def _tabular(row: _Row, lines: list[int], rows: list[list[str]]) -> list[Unit]:
    if not rows:
        return []
    columns = list(zip(*rows, strict=True))
    at = row.at
    pa = _arrow()

    def strings(column: str) -> Any:
        return pa.array(columns[at[column]], pa.string())  # type: ignore[index]

    fast = _records(
        row,
        sensors=strings("sensor"),
        quantities=strings("quantity"),
        times=strings("time"),
        values=strings("value"),
        units=None if at["unit"] is None else list(columns[at["unit"]]),
    )
    if fast is None:
        fast = [None] * len(rows)
    out = [
        Unit(line, cells, None, record)
        for line, cells, record in zip(lines, rows, fast, strict=True)
    ]
    for unit in out:
        if unit.record is None:
            unit.record, unit.error = row.record(unit.cells)  # type: ignore[arg-type]
    return out


def _arrow() -> Any:
    # Lazily: pyarrow costs a third of a second to import.
    import pyarrow as pa  # noqa: PLC0415

    return pa


def _records(
    row: _Row, *, sensors: Any, quantities: Any, times: Any, values: Any, units: list[Any] | None
) -> list[Record | None] | None:
    """The rows' records, converted a column at a time (C, not Python, per cell); None for a
    row whose cells need a closer look (an empty cell, a bad number), and None for all when a
    column does not convert as a whole: the row by row path then says what is wrong."""
    pa = _arrow()
    import pyarrow.compute as pc  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        seconds = _epoch_seconds(times, row.zone).to_pylist()
        numbers = pc.cast(values, pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return None
    names = sensors.to_pylist(), quantities.to_pylist()
    out: list[Record | None] = []
    limit = RELATIVE_TIME_LIMIT
    isfinite = math.isfinite
    for i, (sensor, quantity, time, value) in enumerate(zip(*names, seconds, numbers, strict=True)):
        if (
            not sensor
            or not quantity
            or time is None
            or value is None
            or not (isfinite(time) and isfinite(value))
            or time < limit
        ):
            out.append(None)
            continue
        unit = units[i] if units is not None else None
        out.append(Record(f"{sensor}/{quantity}", time, str(unit) if unit else None, value))
    return out


def _epoch_seconds(times: Any, zone: ZoneInfo) -> Any:
    pa = _arrow()
    import pyarrow.compute as pc  # noqa: PLC0415

    utc = pa.timestamp("us", tz="UTC")
    kind = times.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return pc.cast(times, pa.float64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return pc.cast(times, pa.float64())
        except pa.ArrowInvalid:
            pass
        try:
            times = pc.cast(times, utc)
        except pa.ArrowInvalid:
            # Naive times (no offset): in the file's zone; a mix of both goes row by row.
            times = pc.assume_timezone(pc.cast(times, pa.timestamp("us")), timezone=zone.key)
    elif not pa.types.is_timestamp(kind):
        raise ValueError(f"a time column of type {kind}")
    elif kind.tz is None:
        times = pc.assume_timezone(times, timezone=zone.key)
    micros = pc.cast(pc.cast(times, utc), pa.int64())
    return pc.divide(pc.cast(micros, pa.float64()), 1e6)


def _parquet(stream: BinaryIO, row: _Row) -> Iterator[list[Unit]]:
    pa = _arrow()
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"not a Parquet file: {exc}") from None
    header = parquet.schema_arrow.names
    row.check_header(header)
    wanted = [name for name in header if name in row.names.values()]
    row.check_header(wanted)
    at = row.at
    number = 0
    for batch in parquet.iter_batches(batch_size=TABULAR_BATCH_ROWS, columns=wanted):
        columns = batch.columns
        units = None if at["unit"] is None else columns[at["unit"]].to_pylist()
        try:
            column = {name: columns[index] for name, index in at.items() if index is not None}
            fast = _records(
                row,
                sensors=_strings(column["sensor"]),
                quantities=_strings(column["quantity"]),
                times=column["time"],
                values=column["value"],
                units=units,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            fast = None
        chunk = []
        for index, cells in enumerate(zip(*(c.to_pylist() for c in columns), strict=True)):
            number += 1
            record = fast[index] if fast is not None else None
            error = None
            if record is None:
                record, error = row.record(cells)
            chunk.append(
                Unit(number, dict(zip(wanted, cells, strict=True)), record=record, error=error)
            )
        yield chunk


def _strings(column: Any) -> Any:
    """A column as strings (a sensor id stored as a number is still an id)."""
    pa = _arrow()
    return column if pa.types.is_string(column.type) else column.cast(pa.string())


def as_utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
