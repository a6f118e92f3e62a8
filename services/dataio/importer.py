"""A history import: a file's units through the live path's decoding and validation, into the
idempotent writer and the quarantine, one transaction per batch with its checkpoint.

- Decoding: a JSON line through ``services.ingest.salvage.decode_salvaging`` (the worker's), so
  a bad record costs itself only; a CSV or Parquet row is one resolved record already
  (``sources``). Validation: ``services.ingest.validate.Validator`` with the worker's policy
  (``policy(settings)``): registry, units, bounds, the future skew and the retention window.
  The live path has no other age limit, so old history within the retention is accepted.
  Ownership by gateway is not checked: a file comes from an engineer, not from a gateway.
- Writing: ``ReadingWriter`` (direct COPY, staging + ON CONFLICT when a batch holds readings
  already stored); a reading stored with another value is quarantined as ``conflict``.
- Quarantine: one message per bad unit, topic ``import:<source>:<line>``, each entry's detail
  naming the file and the line. The payload is a SenML pack, what ``urbanpulse quarantine
  replay`` validates again once the cause is fixed: a JSON line as it was, a CSV or Parquet row
  as the record it became (its time resolved, so a replay needs neither the file's header and
  mapping nor its time zone); a row that became no record (``bad_row``) keeps its raw text.
- Resuming: ``import_runs`` (migration 0007) holds the last committed unit, updated in each
  batch's transaction; a run of the same file (same bytes and options) starts after it, and a
  finished one writes nothing. Then rollups are refreshed over the imported span and, when the
  span reaches into the current year, the current KPI values.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg.rows import TupleRow

from gateway.errors import SenMLError
from gateway.senml import Record, encode_resolved
from services.ingest.quarantine import (
    IMPORT_GATEWAY,
    Quarantined,
    Rejected,
    bounded,
    import_topic,
    import_view,
)
from services.ingest.salvage import decode_salvaging
from services.ingest.sensor_directory import SensorDirectory
from services.ingest.validate import Policy, Reason, Sensor, Validator, policy
from services.kpi import engine
from services.settings import Settings
from services.storage import quarantine as quarantine_store
from services.storage import rollups
from services.storage.modes import storage_mode
from services.storage.writer import Conflict, ExtraReading, Reading, ReadingWriter, time_us

from .sources import BAD_ROW, Format, Unit, chunks, zone

Conn = psycopg.Connection[TupleRow]

# Records per transaction (and checkpoint). The worker's 5000 keeps its latency low; history has
# none to keep, so twice that halves the commits (each an fsync) an import waits for.
BATCH_RECORDS = 10_000


@dataclass(slots=True)
class ImportResult:
    run_id: str
    source: str
    format: str
    units: int = 0  # lines or rows looked at by this run
    records: int = 0  # SenML records among them (a JSON line may hold many)
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0  # quarantine entries made
    batches: int = 0
    resumed_at: int = 0  # units skipped: committed by an earlier, interrupted run
    already_done: bool = False  # the same file was imported before: nothing written
    span: tuple[datetime, datetime] | None = None
    kpis_refreshed: bool = False
    seconds: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)  # over every run of this file

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "format": self.format,
            "units": self.units,
            "records": self.records,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "quarantined": self.quarantined,
            "batches": self.batches,
            "resumed_at": self.resumed_at,
            "already_done": self.already_done,
            "span": None if self.span is None else [t.isoformat() for t in self.span],
            "kpis_refreshed": self.kpis_refreshed,
            "seconds": round(self.seconds, 3),
            "totals": self.totals,
        }


# Called after each committed batch with (units done so far in the file, records this run).
Progress = Callable[[int, int], None]


def run_id(digest: str, fmt: Format, mapping: dict[str, str], timezone: str) -> str:
    options = f"{fmt.value}|{sorted(mapping.items())}|{timezone}"
    return hashlib.sha256(f"{digest}|{options}".encode()).hexdigest()


def import_policy(settings: Settings) -> Policy:
    """The validation policy an import runs under: the ingestion worker's, so that a file and a
    live pack are held to the same rules (the API and the CLI call this, not services.ingest)."""
    return policy(settings)


def file_digest(stream: BinaryIO) -> str:
    """sha256 of the stream's bytes; leaves it at its start."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def import_file(
    conn: Conn,
    stream: BinaryIO,
    fmt: Format,
    *,
    source: str,
    policy: Policy,
    mapping: dict[str, str] | None = None,
    timezone: str = "UTC",
    batch_records: int = BATCH_RECORDS,
    max_entries_per_unit: int = 500,
    progress: Progress | None = None,
    again: bool = False,
    refresh: bool = True,
    kpis: bool = True,
    now: float | None = None,
) -> ImportResult:
    """Import ``stream`` (seekable, binary) as ``source``; see the module docstring.

    ``kpis=False`` leaves the current KPI values to the monitor (it recomputes them every
    minute; on TimescaleDB over a year of data that takes minutes), as does a role that may
    not store them (the ingestion role).
    ``again`` forgets an earlier run of the same file and imports it whole once more (after a
    registry fix: what was quarantined may pass now; what was stored is found stored).
    ``conn`` must not be in autocommit mode. Raises ``SourceError`` for an unusable file.
    """
    if conn.autocommit:
        raise ValueError("an import needs a connection that is not in autocommit mode")
    started = time.perf_counter()
    zone(timezone)  # refused before anything is recorded
    mapping = dict(mapping or {})
    result = ImportResult(run_id(file_digest(stream), fmt, mapping, timezone), source, fmt.value)
    mode = storage_mode(conn)
    writer = ReadingWriter(conn, mode, direct=True)
    sensors = import_view(SensorDirectory(conn).snapshot)
    if again:
        conn.execute("DELETE FROM import_runs WHERE id = %s", (result.run_id,))
    row = conn.execute(
        "INSERT INTO import_runs (id, source, format) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET updated_at = now() "
        "RETURNING position, finished_at",
        (result.run_id, source, fmt.value),
    ).fetchone()
    conn.commit()
    assert row is not None
    position, finished_at = row
    result.resumed_at = int(position)
    if finished_at is not None:
        result.already_done = True
        result.totals = _totals(conn, result.run_id)
        result.seconds = time.perf_counter() - started
        return result
    received_at = time.time() if now is None else now
    max_entries = max_entries_per_unit
    validator = Validator(policy)
    batch: _Batch = _Batch()
    done = int(position)

    def commit() -> None:
        _commit(
            conn,
            writer=writer,
            validator=validator,
            sensors=sensors,
            batch=batch,
            result=result,
            received_at=received_at,
            max_entries=max_entries,
        )
        if progress is not None:
            progress(batch.last_line, result.records)

    for chunk in chunks(stream, fmt, mapping=mapping, timezone=timezone):
        pending = chunk if not done else [u for u in chunk if u.line > done]
        while pending:
            # A row is one record; a JSON line may hold many: one line at a time, so a batch
            # ends at most one pack over.
            room = 1 if fmt is Format.JSONL else max(1, batch_records - batch.records)
            batch.add(pending[:room], received_at)
            pending = pending[room:]
            if batch.records >= batch_records:
                commit()
                batch = _Batch()
    if batch.units:
        commit()
    lo, hi = _span(conn, result.run_id)
    if lo is not None and hi is not None:
        result.span = (lo, hi)
        if refresh:
            refresh_span(conn, mode, lo, hi)
            # Under the ingestion role the monitor's next round recomputes them instead.
            result.kpis_refreshed = kpis and may_refresh_kpis(conn) and refresh_kpis(conn, hi)
    conn.execute(
        "UPDATE import_runs SET finished_at = now(), updated_at = now() WHERE id = %s",
        (result.run_id,),
    )
    conn.commit()
    result.totals = _totals(conn, result.run_id)
    result.seconds = time.perf_counter() - started
    return result


@dataclass(slots=True)
class _Batch:
    units: list[Unit] = field(default_factory=list)
    records: int = 0  # looked at: decoded, or refused before they could be
    decoded: list[Record] = field(default_factory=list)
    # Per decoded record: (unit number in the batch, index of the record in the unit's pack).
    owner: list[tuple[int, int]] = field(default_factory=list)
    entries: dict[int, list[Rejected]] = field(default_factory=dict)
    last_line: int = 0

    def add(self, units: list[Unit], received_at: float) -> None:
        base = len(self.units)
        self.units.extend(units)
        if units:
            self.last_line = units[-1].line
        decoded, owner = self.decoded, self.owner
        records = 0
        for number, unit in enumerate(units, start=base):
            record = unit.record
            if record is not None:
                decoded.append(record)
                owner.append((number, 0))
                records += 1
            elif unit.pack is not None:
                self._decode(number, unit.pack, received_at)
            else:
                records += 1
                self.reject(number, None, None, BAD_ROW, unit.error or "not a reading")
        self.records += records

    def _decode(self, number: int, pack: bytes, received_at: float) -> None:
        try:
            salvaged = decode_salvaging(pack, received_at)
        except SenMLError as exc:
            self.reject(number, None, exc.index, Reason.NOT_SENML, str(exc))
            self.records += 1
            return
        for bad in salvaged.bad:
            self.reject(number, None, bad.index, Reason.NOT_SENML, str(bad.error))
        for position, record in enumerate(salvaged.records):
            self.owner.append((number, salvaged.original_index(position)))
            self.decoded.append(record)
        self.records += len(salvaged.records) + len(salvaged.bad)

    def reject(
        self, number: int, sensor_id: str | None, index: int | None, reason: str, detail: str
    ) -> None:
        self.entries.setdefault(number, []).append(Rejected(None, sensor_id, index, reason, detail))


def _commit(
    conn: Conn,
    *,
    writer: ReadingWriter,
    validator: Validator,
    sensors: dict[str, Sensor],
    batch: _Batch,
    result: ImportResult,
    received_at: float,
    max_entries: int,
) -> None:
    checked = validator.validate(IMPORT_GATEWAY, batch.decoded, sensors, received_at)
    for reject in checked.rejects:
        number, index = batch.owner[reject.index]
        batch.reject(number, reject.sensor_id, index, reject.reason, reject.detail)
    written = writer.write(checked.rows, checked.extras)
    if written.conflicts:
        _conflicts(batch, written.conflicts)
    items = _quarantined(batch, result.source, received_at, max_entries)
    quarantined = quarantine_store.store(conn, items)
    lo, hi = _bounds(checked.rows, checked.extras)
    conn.execute(
        "UPDATE import_runs SET position = %s, units = units + %s, records = records + %s, "
        "stored = stored + %s, duplicates = duplicates + %s, conflicts = conflicts + %s, "
        "quarantined = quarantined + %s, span_lo = least(span_lo, %s), "
        "span_hi = greatest(span_hi, %s), updated_at = now() WHERE id = %s",
        (
            batch.last_line,
            len(batch.units),
            batch.records,
            written.inserted,
            written.duplicates,
            len(written.conflicts),
            quarantined,
            lo,
            hi,
            result.run_id,
        ),
    )
    conn.commit()
    result.units += len(batch.units)
    result.records += batch.records
    result.stored += written.inserted
    result.duplicates += written.duplicates
    result.conflicts += len(written.conflicts)
    result.quarantined += quarantined
    result.batches += 1


def _conflicts(batch: _Batch, conflicts: Sequence[Conflict]) -> None:
    where: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for record, owner in zip(batch.decoded, batch.owner, strict=True):
        where.setdefault((record.name, time_us(record.time)), []).append(owner)
    for c in conflicts:
        owners = where.get((f"{c.sensor_id}/{c.quantity}", c.time_us))
        if not owners:
            continue
        number, index = owners.pop(0)
        batch.reject(
            number,
            c.sensor_id,
            index,
            Reason.CONFLICT,
            f"{c.sensor_id}/{c.quantity} is stored with {c.stored!r} at that time; the file "
            f"says {c.received!r}. The stored value stays: an operator decides",
        )


def _quarantined(
    batch: _Batch, source: str, received_at: float, max_entries: int
) -> list[Quarantined]:
    items: list[Quarantined] = []
    for number, entries in sorted(batch.entries.items()):
        unit = batch.units[number]
        where = f"{source} line {unit.line}"
        item = Quarantined(received_at, import_topic(source, unit.line), _payload(unit))
        item.entries = bounded(
            [replace(e, detail=f"{where}: {e.detail}") for e in entries], max_entries
        )
        items.append(item)
    return items


def _payload(unit: Unit) -> bytes:
    """What the quarantine keeps of a unit: a SenML pack where there is one (see the module)."""
    if unit.record is None:
        return unit.raw
    try:
        return encode_resolved([unit.record])
    except SenMLError:  # a name no pack can carry: refused as bad_name, for good
        return unit.raw


def _bounds(
    rows: Iterable[Reading], extras: Iterable[ExtraReading]
) -> tuple[datetime | None, datetime | None]:
    times = [r[0] for r in rows]
    times.extend(e[0] for e in extras)
    if not times:
        return None, None
    return datetime.fromtimestamp(min(times), UTC), datetime.fromtimestamp(max(times), UTC)


def _span(conn: Conn, run: str) -> tuple[datetime | None, datetime | None]:
    row = conn.execute("SELECT span_lo, span_hi FROM import_runs WHERE id = %s", (run,)).fetchone()
    conn.commit()
    return (row[0], row[1]) if row else (None, None)


def _totals(conn: Conn, run: str) -> dict[str, int]:
    row = conn.execute(
        "SELECT units, records, stored, duplicates, conflicts, quarantined FROM import_runs "
        "WHERE id = %s",
        (run,),
    ).fetchone()
    conn.commit()
    names = ("units", "records", "stored", "duplicates", "conflicts", "quarantined")
    return dict(zip(names, (int(v) for v in row), strict=True)) if row else {}


# What an import writes, as (table, privileges): readings, the quarantine, its checkpoint.
# One privilege a row: has_table_privilege(t, 'A, B') is true when ANY of them is held.
WRITES = (
    ("readings", "INSERT"),
    ("readings_extra", "INSERT"),
    ("quarantine_messages", "INSERT"),
    ("quarantine", "INSERT"),
    ("import_runs", "SELECT"),
    ("import_runs", "INSERT"),
    ("import_runs", "UPDATE"),
    ("import_runs", "DELETE"),
)


def missing_privileges(conn: Conn) -> list[str]:
    """What the connection's role may not write of what an import writes ("INSERT on
    readings", ...); empty when it may import. Ends the transaction it opens."""
    # One round trip: each (table, privilege) pair checked on its own, side by side.
    granted = conn.execute(
        "SELECT array_agg(has_table_privilege(t, p) ORDER BY n) "
        "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS w(t, p, n)",
        ([table for table, _ in WRITES], [wanted for _, wanted in WRITES]),
    ).fetchone()
    conn.commit()
    held = granted[0] if granted is not None else None
    return [
        f"{wanted} on {table}"
        for (table, wanted), ok in zip(WRITES, held or [False] * len(WRITES), strict=True)
        if not ok
    ]


def may_refresh_kpis(conn: Conn) -> bool:
    """Whether the role may store current KPI values (the ingestion role may not: the monitor
    recomputes them within its interval)."""
    granted = _granted(
        conn,
        "SELECT has_table_privilege('kpi_current', 'INSERT') "
        "AND has_table_privilege('kpi_current', 'UPDATE')",
        (),
    )
    conn.commit()
    return granted


def _granted(conn: Conn, query: str, params: tuple[str, ...]) -> bool:
    row = conn.execute(query, params).fetchone()
    return bool(row and row[0])


def refresh_span(conn: Conn, mode: str, lo: datetime, hi: datetime) -> None:
    """Bring the rollups over [lo, hi] up to date. Partition mode: the writer recorded every
    hour it touched in ``rollup_invalidations``, which the ordinary refresh recomputes.
    TimescaleDB: the continuous aggregates refreshed over the span's whole days only, when
    this role owns them (only the owner may refresh one: the ingestion role of deploy/ does
    not); else their refresh policies take the span in at their next run, as far back as the
    retention's refresh floor (services/storage/retention.py)."""
    if mode != "timescaledb":
        rollups.refresh(conn, mode)
        return
    owned = _granted(
        conn,
        "SELECT bool_and(pg_has_role(relowner, 'USAGE')) FROM pg_class "
        "WHERE relname IN ('readings_1m', 'readings_1h', 'readings_1d')",
        (),
    )
    if not owned:
        conn.commit()
        return
    day = timedelta(days=1)
    start = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
    end = datetime(hi.year, hi.month, hi.day, tzinfo=UTC) + day
    rollups.refresh_range(conn, start, end)


def refresh_kpis(conn: Conn, hi: datetime, now: datetime | None = None) -> bool:
    """Recompute the stored current KPI values when the span reaches into the current year (in
    any timezone: a day's margin); older periods are computed from the rollups when asked."""
    moment = now or datetime.now(UTC)
    if hi < datetime(moment.year, 1, 1, tzinfo=UTC) - timedelta(days=1):
        return False
    engine.refresh_current(conn, moment)
    return True


def open_source(path: Path) -> BinaryIO:
    return path.open("rb")
