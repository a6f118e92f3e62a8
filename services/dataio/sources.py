"""Reading import files into SenML packs, one *unit* (a CSV row, a JSON line, a Parquet row) at
a time, each with its line (or row) number and raw bytes for the quarantine.

No database here. Tabular rows (CSV, Parquet) become one SenML record each,
``{"n": "<sensor>/<quantity>", "t": <epoch s>, "v": <value>, "u": <unit>}``, so that they are
decoded by the same codec as a gateway's pack (``gateway.senml``: name syntax, finite numbers,
units) before the ingest validator sees them; a row that cannot even become a record (no such
column, a value that is not a number, a time that is not a time) is a ``Unit`` with an
``error`` and goes to the quarantine as ``bad_row``.

Columns (CSV header, Parquet schema): ``sensor, quantity, time, value, unit`` (``unit`` may be
absent or empty: the quantity's canonical unit). ``time`` is ISO 8601 (naive: in ``timezone``)
or Unix epoch seconds; a Parquet timestamp column is taken as is. A mapping renames columns:
``{"sensor": "device_id", "time": "ts"}`` reads the sensor from ``device_id``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import msgspec

from gateway.names import reading_name
from gateway.senml import RELATIVE_TIME_LIMIT

COLUMNS = ("sensor", "quantity", "time", "value", "unit")
REQUIRED = ("sensor", "quantity", "time", "value")
BAD_ROW = "bad_row"  # a quarantine reason: the row could not become a SenML record
# Parquet rows read at a time: bounded memory whatever the file's row groups.
PARQUET_BATCH_ROWS = 8192


class Format(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


class SourceError(ValueError):
    """The file as a whole cannot be read (no header, a mapped column missing, not Parquet)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One line or row of the file: a SenML pack to decode, or why there is none."""

    line: int  # 1-based; for CSV the file's line where the row starts, for Parquet the row
    raw: bytes
    pack: bytes | None
    error: str | None = None


def guess_format(name: str) -> Format:
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return Format.JSONL
    if suffix in (".parquet", ".pq"):
        return Format.PARQUET
    if suffix in (".csv", ".txt"):
        return Format.CSV
    raise SourceError(f"cannot tell the format of {name!r}: give --format csv, jsonl or parquet")


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
                + ", ".join(COLUMNS)
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
    if fmt is Format.JSONL:
        return _jsonl(stream)
    row = _Row(dict(mapping or {}), ZoneInfo(timezone))
    if fmt is Format.CSV:
        return _csv(stream, row)
    return _parquet(stream, row)


def _jsonl(stream: BinaryIO) -> Iterator[Unit]:
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if text:  # a blank line (the last one, often) is nothing to import
            yield Unit(number, text, text)


class _Row:
    """A tabular row (column name -> cell) to a one-record SenML pack."""

    def __init__(self, mapping: dict[str, str], zone: ZoneInfo) -> None:
        self.names = {column: mapping.get(column, column) for column in COLUMNS}
        self.zone = zone
        self.encode = msgspec.json.Encoder().encode

    def check_header(self, header: list[str]) -> None:
        missing = [self.names[c] for c in REQUIRED if self.names[c] not in header]
        if missing:
            raise SourceError(
                f"no column {', '.join(map(repr, missing))} (the file has "
                f"{', '.join(map(repr, header))}); map columns with --map column=name"
            )

    def pack(self, cells: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
        names = self.names
        sensor, quantity = cells.get(names["sensor"]), cells.get(names["quantity"])
        if not sensor or not quantity:
            return None, "sensor and quantity must not be empty"
        time, error = self._time(cells.get(names["time"]))
        if error is not None:
            return None, error
        value = cells.get(names["value"])
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None, f"value {value!r} is not a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"value {value!r} is not a number"
        record: dict[str, Any] = {"n": reading_name(str(sensor), str(quantity)), "t": time}
        # NaN and infinities have no JSON form: say so here rather than as a missing value.
        if not math.isfinite(value):
            return None, f"value {value!r} is not a finite number"
        record["v"] = value
        unit = cells.get(names["unit"])
        if unit:
            record["u"] = str(unit)
        return self.encode([record]), None

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


def _csv(stream: BinaryIO, row: _Row) -> Iterator[Unit]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError("the CSV file is empty: it needs a header line") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SourceError(f"not a UTF-8 CSV file: {exc}") from None
    header = [h.strip() for h in header]
    row.check_header(header)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="")
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            yield Unit(start, b"", None, f"not CSV: {exc}")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not cells:
            continue
        out.seek(0)
        out.truncate()
        writer.writerow(cells)
        raw = out.getvalue().encode()
        if len(cells) != len(header):
            yield Unit(line, raw, None, f"{len(cells)} values for {len(header)} columns")
            continue
        pack, error = row.pack(dict(zip(header, cells, strict=True)))
        yield Unit(line, raw, pack, error)


def _parquet(stream: BinaryIO, row: _Row) -> Iterator[Unit]:
    # Lazily: pyarrow costs a third of a second to import, and CSV imports never need it.
    import pyarrow as pa  # type: ignore[import-untyped]  # noqa: PLC0415
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"not a Parquet file: {exc}") from None
    header = parquet.schema_arrow.names
    row.check_header(header)
    wanted = sorted({row.names[c] for c in COLUMNS if row.names[c] in header})
    encode = row.encode
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
        for cells in batch.to_pylist():
            number += 1
            pack, error = row.pack(cells)
            yield Unit(number, encode(cells), pack, error)


def as_utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
