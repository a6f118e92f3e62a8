"""The idempotent write path: binary COPY into a staging table, then insert-on-conflict.

With ``direct=True`` (issue 15: the pack ledger already dropped packs seen before, so a batch's
rows are new in the common case) a batch is first COPYed straight into ``readings`` under a
savepoint; only when the key refuses it (the same reading in two packs, a device resending
under a new number, an unnumbered redelivery) is the savepoint rolled back and the batch written
the staging + ON CONFLICT way. The live stream's event and the rollup invalidations are then
built from the batch itself, since every row of it is new. A fallback is not free: the rolled
back COPY has written its rows' WAL and left them as dead tuples for vacuum, on top of the
staging write. ``direct_batches`` and ``fallback_batches`` count both outcomes (the worker
exports them): a high fallback rate says direct COPY costs more than it saves.

A batch is written in the caller's transaction, so the caller can store readings and quarantine
rows together and acknowledge the MQTT messages only after the commit. Writing the same batch
twice leaves one copy (the primary key is (sensor, quantity, time)); ``WriteResult`` says how
many rows were new.

The COPY stream is built here with one ``struct.pack`` a row (0.16 us a row on this machine)
rather than psycopg's row writer, which needs a ``datetime`` per reading: bench/bench_write.py
measures the same COPY about 10% slower that way, client CPU the worker would rather spend on
decoding and validating.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TypeVar

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import TupleRow

from . import events
from .partitions import PartitionSet, read_interval

# PostgreSQL's binary COPY: signature, flags, header extension length; -1 fields ends it.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
# Row: 4 fields; timestamptz (int64 µs since 2000-01-01), int4, int2, float8, each length-prefixed.
_FIELDS = struct.pack(">h", 4)
_PG_EPOCH = 946_684_800.0
# PostgreSQL's binary array: dimensions (1), has-nulls flag, element type oid, then the one
# dimension's length and lower bound; the elements follow, each length-prefixed.
_ARRAY_HEADER = struct.Struct(">iiIii")
_INT2, _INT4, _FLOAT8, _TIMESTAMPTZ = 21, 23, 701, 1184  # element type oids
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)

_COPY_DIRECT = "COPY readings (time, sensor_key, quantity_key, value) FROM STDIN (FORMAT BINARY)"
# Every row of a direct batch is new: its event comes from the client's arrays, sent already in
# PostgreSQL's binary array format (``_binary_array``). Times are the COPY's microseconds since
# 2000-01-01, so the event names exactly the stored times.
_EVENT_DIRECT = (
    "INSERT INTO events (type, sensor_keys, quantity_keys, times, readings) VALUES ('readings', "
    "%b::int4[], %b::int2[], %b::timestamptz[], %b::float8[])"
)
_INVALIDATE_DIRECT = (
    "INSERT INTO rollup_invalidations (lo, hi) SELECT timestamptz '2000-01-01 00:00:00+00' + "
    "lo * interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00' + "
    "hi * interval '1 microsecond' FROM unnest(%s::int8[], %s::int8[]) AS x(lo, hi)"
)
_HOUR_US = 3_600_000_000

_INSERT_READINGS = (
    "INSERT INTO readings (time, sensor_key, quantity_key, value) "
    "SELECT time, sensor_key, quantity_key, value FROM staging_readings "
    "ON CONFLICT DO NOTHING"
)
# The new rows only (a redelivered duplicate is not news), as parallel arrays of native types.
# Side by side on 600 k rows (one run, on a shared machine): no event 283 k rows/s, native arrays
# 248 k, the same event as JSON arrays 204 k (float8 -> numeric conversions).
_INSERT_READINGS_WITH_EVENT = (
    "WITH new AS (" + _INSERT_READINGS + " RETURNING time, sensor_key, quantity_key, value) "
    "INSERT INTO events (type, sensor_keys, quantity_keys, times, readings) SELECT 'readings', "
    "array_agg(sensor_key), array_agg(quantity_key), array_agg(time), array_agg(value) "
    "FROM new HAVING count(*) > 0 RETURNING cardinality(sensor_keys)"
)

# A staged reading whose key is already stored with another value (or twice in the batch with
# two values): looked for only when the insert stored fewer rows than it was given, so the
# common path (every row new) pays nothing. After the insert every staged key is stored, so the
# stored row is found by one primary-key lookup per staged row (a subquery: as a join, the
# planner, blind to the temporary table's size, hashed the whole readings table, 10x slower).
_CONFLICTS = (
    "SELECT c.sensor_key, c.quantity_key, (extract(epoch FROM c.time) * 1000000)::int8, "
    "{received}, {stored}, coalesce(se.id, c.sensor_key::text), "
    "coalesce(q.name, c.quantity_key::text) "
    "FROM (SELECT s.*, (SELECT ({stored_row}) FROM {table} r WHERE r.sensor_key = s.sensor_key "
    "AND r.quantity_key = s.quantity_key AND r.time = s.time) AS stored FROM {staging} s) c "
    "LEFT JOIN sensors se ON se.key = c.sensor_key "
    "LEFT JOIN quantities q ON q.key = c.quantity_key "
    "WHERE ({stored}) IS DISTINCT FROM ({received})"
)
_CONFLICTS_READINGS = _CONFLICTS.format(
    received="c.value",
    stored="c.stored",
    stored_row="r.value",
    staging="staging_readings",
    table="readings",
)
_EXTRA_COLUMNS = ("value_string", "value_bool", "value_data", "value_sum")
# The stored row whole (of type readings_extra), its value fields taken apart above.
_CONFLICTS_EXTRAS = _CONFLICTS.format(
    received=", ".join(f"c.{name}" for name in _EXTRA_COLUMNS),
    stored=", ".join(f"(c.stored).{name}" for name in _EXTRA_COLUMNS),
    stored_row="r",
    staging="staging_readings_extra",
    table="readings_extra",
)

# (time as Unix epoch seconds, sensor key, quantity key, value)
Reading = tuple[float, int, int, float]
# (time, sensor key, quantity key, string, bool, data, sum): SenML values that are not a number
ExtraReading = tuple[float, int, int, str | None, bool | None, bytes | None, float | None]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reading not stored because its key holds another value: the first write stays."""

    sensor_key: int
    quantity_key: int
    time_us: int  # microseconds since the Unix epoch, as stored
    received: object  # the value refused: a float, or (string, bool, data, sum) for an extra
    stored: object  # the value kept, of the same shape
    sensor_id: str
    quantity: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    received: int
    inserted: int
    conflicts: tuple[Conflict, ...] = ()

    @property
    def duplicates(self) -> int:
        """Rows already stored with the same value (redeliveries, replays): not news."""
        return self.received - self.inserted - len(self.conflicts)


def time_us(epoch_seconds: float) -> int:
    """A reading's time as stored (microseconds since the Unix epoch, as ``encode_copy``)."""
    return round((epoch_seconds - _PG_EPOCH) * 1e6) + round(_PG_EPOCH) * 1_000_000


_Owner = TypeVar("_Owner", bound=Hashable)


def conflict_owners(
    conflicts: Sequence[Conflict],
    carriers: Iterable[tuple[_Owner, Sequence[Reading], Sequence[ExtraReading]]],
) -> dict[_Owner, list[Conflict]]:
    """Which carrier (a message, a quarantine entry) brought each refused reading.

    A conflict goes to the first carrier, in ``carriers``' order, of a reading with its key and
    refused value that no other conflict took: two carriers of the same refused value each get
    one. ``carriers`` is read only until every conflict has its owner.
    """
    wanted: dict[tuple[int, int, int], list[Conflict]] = {}
    for conflict in conflicts:
        key = (conflict.time_us, conflict.sensor_key, conflict.quantity_key)
        wanted.setdefault(key, []).append(conflict)
    owners: dict[_Owner, list[Conflict]] = {}
    left = len(conflicts)
    for owner, rows, extras in carriers:
        if not left:
            break
        keyed: list[tuple[float, int, int, object]] = [(r[0], r[1], r[2], r[3]) for r in rows]
        keyed.extend((e[0], e[1], e[2], tuple(e[3:])) for e in extras)
        for t, sensor_key, quantity_key, received in keyed:
            matches = wanted.get((time_us(t), sensor_key, quantity_key))
            if not matches:
                continue
            for conflict in matches:
                if conflict.received == received:
                    matches.remove(conflict)
                    owners.setdefault(owner, []).append(conflict)
                    left -= 1
                    break
    return owners


class _BinaryArray(bytes):
    """A one-dimensional array parameter already in PostgreSQL's binary format."""


class _BinaryArrayDumper(Dumper):
    # Sent as is; the statement's cast names its type (oid 0: the server infers it).
    format = Format.BINARY

    def dump(self, obj: _BinaryArray) -> Buffer:
        return obj


_LITTLE_ENDIAN = sys.byteorder == "little"


def _big_endian(code: str, values: Sequence[float]) -> bytes:
    """``values`` as consecutive big-endian items of ``array`` type ``code``."""
    items = array(code, values)
    if _LITTLE_ENDIAN:
        items.byteswap()
    return items.tobytes()


def _interleave(n: int, parts: Sequence[bytes]) -> bytearray:
    """``n`` records, the k-th the k-th fixed-size item of each part in turn (each part holds
    ``n`` items of one size): a strided copy per byte of a record, all in C, instead of a
    ``struct.pack`` per record in Python."""
    if n == 0:
        return bytearray()
    stride = sum(len(part) for part in parts) // n
    out = bytearray(stride * n)
    offset = 0
    for part in parts:
        size = len(part) // n
        for k in range(size):
            out[offset + k :: stride] = part[k::size]
        offset += size
    return out


def _length_words(size: int, n: int) -> bytes:
    return struct.pack(">i", size) * n


class Columns(NamedTuple):
    """A batch of readings by column, times as microseconds since 2000 (PostgreSQL's epoch)."""

    micros: list[int]
    sensors: list[int]
    quantities: list[int]
    values: list[float]


def columns(rows: Sequence[Reading]) -> Columns:
    epoch = _PG_EPOCH
    return Columns(
        [round((r[0] - epoch) * 1e6) for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )


def _binary_array(element_oid: int, code: str, values: Sequence[float]) -> _BinaryArray:
    """``values`` as a binary array of ``array`` type ``code``.

    psycopg's list dumper walks the list in Python (13 ms for a batch's four arrays of 5,000
    here, most of the writer thread's own time in a py-spy profile); one ``struct.pack`` of the
    whole array was about 3x less, and this (two typed-array copies, no Python per item) less
    again: ``bench/bench_write.py`` times the encoders."""
    n = len(values)
    size = array(code).itemsize
    body = _interleave(n, [_length_words(size, n), _big_endian(code, values)])
    return _BinaryArray(_ARRAY_HEADER.pack(1, 0, element_oid, n, 1) + body)


def encode_copy(rows: Sequence[Reading]) -> bytes:
    """The binary COPY stream of ``rows`` for (time, sensor_key, quantity_key, value)."""
    return encode_columns(columns(rows))


def encode_columns(batch: Columns) -> bytes:
    """The binary COPY stream of a batch by column: per row (``>hiqiiihid``), the field count,
    then each field's length and big-endian value. (``array``'s ``i``, ``h``, ``q`` and ``d``
    are 4, 2, 8 and 8 bytes wherever CPython runs on Linux, as these lengths say.)"""
    n = len(batch.micros)
    body = _interleave(
        n,
        [
            _FIELDS * n,
            _length_words(8, n),
            _big_endian("q", batch.micros),
            _length_words(4, n),
            _big_endian("i", batch.sensors),
            _length_words(2, n),
            _big_endian("h", batch.quantities),
            _length_words(8, n),
            _big_endian("d", batch.values),
        ],
    )
    return _COPY_HEADER + body + _COPY_TRAILER


class ReadingWriter:
    """Writes batches of readings on one connection (not thread-safe; one per worker).

    ``mode`` is the storage mode of the database ("timescaledb" or "partitioned"). Give it a
    connection of its own: the constructor commits.
    """

    def __init__(
        self,
        conn: psycopg.Connection[TupleRow],
        mode: str,
        *,
        live_events: bool = False,
        direct: bool = False,
    ) -> None:
        self.conn = conn
        self.mode = mode
        # Try a plain COPY into readings first (module docstring); counted for the bench.
        self.direct = direct
        self.direct_batches = 0
        self.fallback_batches = 0
        # Also append each batch's new rows to the live stream's event log (storage.events).
        self.live_events = live_events
        conn.adapters.register_dumper(_BinaryArray, _BinaryArrayDumper)
        self._partitions: PartitionSet | None = None
        if mode == "partitioned":
            self._partitions = PartitionSet(read_interval(conn))
            self._partitions.load(conn)
        # Created and committed here, once: a temporary table created inside a batch's
        # transaction would vanish with its rollback.
        self._create_staging()
        conn.commit()

    def _create_staging(self) -> None:
        # Temporary, so unlogged: the staging rows never reach the WAL.
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS staging_readings "
            "(time timestamptz, sensor_key integer, quantity_key smallint, value float8) "
            "ON COMMIT DELETE ROWS"
        )
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS staging_readings_extra (LIKE readings_extra) "
            "ON COMMIT DELETE ROWS"
        )

    def write(self, rows: Sequence[Reading], extras: Sequence[ExtraReading] = ()) -> WriteResult:
        """Write ``rows`` (and ``extras``) in the current transaction; the caller commits."""
        if not rows and not extras:
            return WriteResult(0, 0)
        conn = self.conn
        if self._partitions is not None:
            times = [r[0] for r in rows]
            times.extend(e[0] for e in extras)
            self._partitions.ensure(conn, self._partitions.missing(times))
        inserted = 0
        conflicts: list[Conflict] = []
        if rows and self.direct and self._write_direct(rows):
            inserted += len(rows)
            rows_done = True
        else:
            rows_done = False
        if rows and not rows_done:
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY staging_readings (time, sensor_key, quantity_key, value) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(encode_copy(rows))
                if self.live_events:
                    new = self._insert_with_event(cur)
                else:
                    cur.execute(_INSERT_READINGS)
                    new = max(cur.rowcount, 0)
                inserted += new
                if new < len(rows):
                    conflicts.extend(self._conflicts(cur, _CONFLICTS_READINGS))
                if self._partitions is not None:
                    self._invalidate(cur, "staging_readings")
                cur.execute("TRUNCATE staging_readings")
        if extras:
            new, extra_conflicts = self._write_extras(extras)
            inserted += new
            conflicts.extend(extra_conflicts)
        return WriteResult(len(rows) + len(extras), inserted, tuple(conflicts))

    def _write_direct(self, rows: Sequence[Reading]) -> bool:
        """COPY ``rows`` into readings under a savepoint; False (nothing left) if the key
        refuses any of them."""
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute("SAVEPOINT direct_copy")
            batch = columns(rows)
            try:
                with cur.copy(_COPY_DIRECT) as copy:
                    copy.write(encode_columns(batch))
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT direct_copy")
                self.fallback_batches += 1
                return False
            self.direct_batches += 1
            micros = batch.micros
            arrays = None
            if self.live_events:
                arrays = (
                    _binary_array(_INT4, "i", batch.sensors),
                    _binary_array(_INT2, "h", batch.quantities),
                    _binary_array(_TIMESTAMPTZ, "q", micros),
                    _binary_array(_FLOAT8, "d", batch.values),
                )
            spans = self._hour_spans(micros) if self._partitions is not None else None
            # One round trip for what follows the COPY (each is one on its own): on a busy
            # machine every wait for the server to be scheduled costs the batch.
            with conn.pipeline():
                cur.execute("RELEASE SAVEPOINT direct_copy")
                if arrays is not None:
                    events.lock(conn)
                    cur.execute(_EVENT_DIRECT, arrays)
                if spans is not None:
                    cur.execute(_INVALIDATE_DIRECT, ([a for a, _ in spans], [b for _, b in spans]))
        return True

    @staticmethod
    def _hour_spans(micros: Sequence[int]) -> list[tuple[int, int]]:
        """The earliest and latest time (µs since 2000) the batch has in each hour."""
        hours: dict[int, tuple[int, int]] = {}
        for us in micros:
            hour = us // _HOUR_US
            lo_hi = hours.get(hour)
            if lo_hi is None:
                hours[hour] = (us, us)
            elif us < lo_hi[0]:
                hours[hour] = (us, lo_hi[1])
            elif us > lo_hi[1]:
                hours[hour] = (lo_hi[0], us)
        return list(hours.values())

    @staticmethod
    def _conflicts(cur: psycopg.Cursor[TupleRow], query: str) -> list[Conflict]:
        return [Conflict(*row) for row in cur.execute(query).fetchall()]

    def _insert_with_event(self, cur: psycopg.Cursor[TupleRow]) -> int:
        events.lock(self.conn)
        cur.execute(_INSERT_READINGS_WITH_EVENT)
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def _write_extras(self, extras: Sequence[ExtraReading]) -> tuple[int, list[Conflict]]:
        with self.conn.cursor() as cur:
            with cur.copy(
                "COPY staging_readings_extra (time, sensor_key, quantity_key, value_string, "
                "value_bool, value_data, value_sum) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["timestamptz", "int4", "int2", "text", "bool", "bytea", "float8"])
                # time_us, not datetime.fromtimestamp: the two round some sub-microsecond
                # times apart, and conflicts are matched to their readings by time_us.
                for t, *rest in extras:
                    copy.write_row((_UNIX + timedelta(microseconds=time_us(t)), *rest))
            cur.execute(
                "INSERT INTO readings_extra SELECT * FROM staging_readings_extra "
                "ON CONFLICT DO NOTHING"
            )
            inserted = max(cur.rowcount, 0)
            conflicts: list[Conflict] = []
            if inserted < len(extras):
                for k, q, t, *values, sensor_id, quantity in cur.execute(
                    _CONFLICTS_EXTRAS
                ).fetchall():
                    conflicts.append(
                        Conflict(k, q, t, tuple(values[:4]), tuple(values[4:]), sensor_id, quantity)
                    )
            cur.execute("TRUNCATE staging_readings_extra")
        return inserted, conflicts

    @staticmethod
    def _invalidate(cur: psycopg.Cursor[object], staging: str) -> None:
        # Tell the next rollup refresh which hours this batch touched; ranges above the
        # watermark cost nothing there, and late data below it gets recomputed.
        cur.execute(
            "INSERT INTO rollup_invalidations (lo, hi) "
            f"SELECT min(time), max(time) FROM {staging} "
            "GROUP BY date_trunc('hour', time AT TIME ZONE 'UTC')"
        )
