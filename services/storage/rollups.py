"""Rollups: per sensor and quantity, 1 minute, 1 hour and 1 day buckets.

Each row carries count, sum, min, max, first and last (with the times of the first and last
reading), so averages, totals of cumulative meters and completeness can all be derived.

With TimescaleDB they are continuous aggregates kept by refresh policies (real-time aggregation
on); ``refresh`` only forces them. In partition mode they are tables, and ``refresh`` brings them
up to the start of the current minute: it recomputes the buckets between the watermark and now,
and every bucket the writers touched below the watermark since the last refresh (late data,
gateway replays, found in ``rollup_invalidations``). Rollups below the watermark therefore equal a
direct aggregation of the raw rows, down to where retention removed raw rows: no refresh, in
either mode, recomputes a bucket before ``retention.refresh_floor``, so rollups outlive the raw
readings they summarise (a late reading older than that is stored but not rolled up).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from .retention import refresh_floor

WATERMARK = "rollups"
# A single refresher at a time, whichever process calls it.
_REFRESH_LOCK = 7_210_002
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

_WIDTHS = (
    ("readings_1m", MINUTE),
    ("readings_1h", timedelta(hours=1)),
    ("readings_1d", timedelta(days=1)),
)

_FROM_RAW = """
INSERT INTO readings_1m
SELECT date_bin('1 minute', time, '1970-01-01Z') AS bucket, sensor_key, quantity_key,
       count(*), sum(value), min(value), max(value),
       (array_agg(value ORDER BY time))[1], (array_agg(value ORDER BY time DESC))[1],
       min(time), max(time)
FROM readings WHERE time >= %(lo)s AND time < %(hi)s{sensor}
GROUP BY 1, sensor_key, quantity_key
"""

_FROM_FINER = """
INSERT INTO {target}
SELECT date_bin(%(width)s, bucket, '1970-01-01Z') AS bucket, sensor_key, quantity_key,
       sum(count)::bigint, sum(sum), min(min), max(max),
       (array_agg(first ORDER BY first_time))[1], (array_agg(last ORDER BY last_time DESC))[1],
       min(first_time), max(last_time)
FROM {source} WHERE bucket >= %(lo)s AND bucket < %(hi)s{sensor}
GROUP BY 1, sensor_key, quantity_key
"""

Range = tuple[datetime, datetime]


# (rollup, its bucket width, the next coarser width): a row of a level is a tile of [lo, hi)
# when its bucket lies inside the range and the coarser bucket around it does not. A day is
# '24 hours', never '1 day': timestamptz +/- '1 day' follows the session's TimeZone, a 23- or
# 25-hour day across a DST change, while the buckets are UTC days.
_LEVELS = (
    ("readings_1d", "24 hours", None),
    ("readings_1h", "1 hour", "24 hours"),
    ("readings_1m", "1 minute", "1 hour"),
)
_ROLLUP_COLUMNS = (
    "bucket, sensor_key, quantity_key, count, sum, min, max, first, last, first_time, last_time"
)
_RAW_COLUMNS = (
    "time AS bucket, sensor_key, quantity_key, 1::bigint AS count, value AS sum, value AS min, "
    "value AS max, value AS first, value AS last, time AS first_time, time AS last_time"
)


def _floor_sql(moment: str, width: str) -> str:
    return f"date_bin('{width}', {moment}, '1970-01-01Z')"


def _ceil_sql(moment: str, width: str) -> str:
    # The first bucket boundary at or after the moment (microseconds are the finest time).
    return (
        f"date_bin('{width}', {moment} + interval '{width}' - interval '1 microsecond', "
        "'1970-01-01Z')"
    )


def tiled(
    sensor: str, lo: str, hi: str, quantity: str | None = None, *, cut_minutes: str | None
) -> str:
    """A LATERAL subquery of the rollup rows of sensor ``sensor`` that tile ``[lo, hi)``
    exactly: ``readings_1d`` for the whole UTC days inside, ``readings_1h`` for the whole hours
    left at either edge, ``readings_1m`` for the whole minutes left, and the raw readings of a
    minute a bound cuts (as one-reading rows). Each reading of the range is in exactly one row,
    so sum/count, min/max and first/last by time over the rows are those of the raw readings.

    ``cut_minutes`` says which minutes the values of ``lo`` and ``hi`` may cut, as a condition
    on ``t.time`` made of bind parameters (:func:`cut_minutes` makes it from the moments a
    caller knows), or None when they are all whole minutes. With None there are no raw legs at
    all; with a condition, the raw legs read only the readings it admits, and since its terms
    are constants the planner prunes the partitions (or chunks) of ``readings`` outside those
    minutes while planning. A raw leg whose time bounds are the columns of a join is planned
    against every partition, which costs more than the rest of a query (bench_bounds).

    ``sensor``, ``lo`` and ``hi`` are SQL expressions (columns of the rows it is joined to);
    ``quantity``, when given, is the right side of ``quantity_key = ...`` (a bind parameter, a
    CASE, or ``ANY(ARRAY[...])``). Use it as ``JOIN LATERAL {tiled(...)} AS r ON true``. Every
    branch is an index range scan of the rollup's key, whatever the bounds.
    """
    wanted = f" AND t.quantity_key = {quantity}" if quantity is not None else ""
    legs = []
    for table, width, coarser in _LEVELS:
        # The table names are this module's; the rest, the caller's column expressions.
        select = f"SELECT {_ROLLUP_COLUMNS} FROM {table} AS t WHERE t.sensor_key = "
        base = (
            f"{select}{sensor}{wanted}"
            f" AND t.bucket >= {lo} AND t.bucket <= {hi} - interval '{width}'"
        )
        if coarser is None:
            legs.append(base)
            continue
        # Left edge: buckets before the first whole coarser bucket; right edge: those from the
        # last one's end on (never before the left edge's end, so the two never overlap).
        legs.append(f"{base} AND t.bucket < {_ceil_sql(lo, coarser)}")
        legs.append(
            f"{base} AND t.bucket >= greatest({_floor_sql(hi, coarser)}, {_ceil_sql(lo, coarser)})"
        )
    if cut_minutes is not None:
        raw = (
            f"SELECT {_RAW_COLUMNS} FROM readings AS t WHERE t.sensor_key = {sensor}{wanted}"
            f" AND ({cut_minutes})"
        )
        first_minute = _ceil_sql(lo, "1 minute")
        legs.append(f"{raw} AND t.time >= {lo} AND t.time < least({hi}, {first_minute})")
        legs.append(
            f"{raw} AND t.time >= greatest({_floor_sql(hi, '1 minute')}, {first_minute})"
            f" AND t.time < {hi}"
        )
    return "(" + "\n    UNION ALL ".join(legs) + ")"


def floor(moment: datetime, width: timedelta) -> datetime:
    """The start of the bucket of ``width`` holding ``moment`` (buckets are aligned on the
    epoch, UTC, as the rollups' are); exact to the microsecond, far from 1970 too."""
    return _EPOCH + ((moment - _EPOCH) // width) * width


def ceil(moment: datetime, width: timedelta) -> datetime:
    """The first bucket boundary of ``width`` at or after ``moment``."""
    start = floor(moment, width)
    return start if start == moment else start + width


# Past this many cut minutes (a series in a zone with seconds in its offset, before 1972) the
# condition stops naming each one: the raw legs are planned over all of readings instead.
MOST_CUT_MINUTES = 32


def cut_minutes(
    moments: Iterable[datetime], name: str = "cut_minute"
) -> tuple[str | None, dict[str, datetime]]:
    """:func:`tiled`'s ``cut_minutes`` for ranges whose bounds are among ``moments``: the
    condition on ``t.time`` that admits the minutes they cut, and its bind parameters (named
    ``{name}_N``, to merge into the statement's); None when every moment is a whole minute, and
    ``"true"`` (no pruning while planning) past :data:`MOST_CUT_MINUTES` minutes."""
    minutes = sorted({floor(m, MINUTE) for m in moments if floor(m, MINUTE) != m})
    if not minutes:
        return None, {}
    if len(minutes) > MOST_CUT_MINUTES:
        return "true", {}
    values: dict[str, datetime] = {}
    terms = []
    for i, minute in enumerate(minutes):
        values[f"{name}_{i}"], values[f"{name}_{i}_end"] = minute, minute + MINUTE
        terms.append(
            f"t.time >= %({name}_{i})s::timestamptz AND t.time < %({name}_{i}_end)s::timestamptz"
        )
    return " OR ".join(f"({term})" for term in terms), values


@dataclass(frozen=True, slots=True)
class RefreshResult:
    watermark: datetime | None
    ranges: tuple[Range, ...]  # the minute-aligned ranges recomputed


def align(ranges: list[Range], width: timedelta) -> list[Range]:
    """Widen each range to whole buckets of ``width`` and merge those that touch."""
    widened = sorted((floor(lo, width), ceil(hi, width)) for lo, hi in ranges if lo < hi)
    merged: list[Range] = []
    for lo, hi in widened:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def refresh(
    conn: psycopg.Connection[TupleRow], mode: str, now: datetime | None = None
) -> RefreshResult:
    """Bring the rollups up to date; commits. ``now`` is for tests."""
    if mode == "timescaledb":
        return _refresh_timescaledb(conn)
    return _refresh_partitioned(conn, now or datetime.now(UTC))


def _refresh_timescaledb(conn: psycopg.Connection[TupleRow]) -> RefreshResult:
    refresh_range(conn, None, None)
    return RefreshResult(watermark=None, ranges=())


def refresh_range(
    conn: psycopg.Connection[TupleRow], lo: datetime | None, hi: datetime | None
) -> None:
    """TimescaleDB: refresh the continuous aggregates over [lo, hi) (None: unbounded), each
    from no earlier than its ``refresh_floor``; commits."""
    floors = {name: refresh_floor(conn, name.removeprefix("readings_")) for name, _ in _WIDTHS}
    conn.commit()
    previous = conn.autocommit
    conn.autocommit = True  # refresh_continuous_aggregate refuses to run in a transaction
    try:
        for name, _ in _WIDTHS:
            floor_ = floors[name]
            start = lo if floor_ is None or (lo is not None and lo >= floor_) else floor_
            if start is not None and hi is not None and start >= hi:
                continue
            conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
                (name, start, hi),
            )
    finally:
        conn.autocommit = previous


def _refresh_partitioned(conn: psycopg.Connection[TupleRow], now: datetime) -> RefreshResult:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REFRESH_LOCK,))
        row = conn.execute(
            "SELECT watermark FROM rollup_watermarks WHERE name = %s", (WATERMARK,)
        ).fetchone()
        old: datetime | None = row[0] if row else None
        new = max(floor(now, MINUTE), old) if old else floor(now, MINUTE)
        # Take the invalidations before reading the readings: a writer that commits in between
        # leaves its invalidation for the next refresh, so nothing is missed.
        # Never before the floor: raw rows retention removed would be missing from the result.
        floor_ = refresh_floor(conn, "1m", now)
        touched: list[Range] = [
            (lo if floor_ is None else max(lo, floor_), min(hi + timedelta(microseconds=1), new))
            for lo, hi in conn.execute(
                "DELETE FROM rollup_invalidations RETURNING lo, hi"
            ).fetchall()
            if (old is None or lo < old) and (floor_ is None or hi >= floor_)
        ]
        if old is None:
            first = conn.execute("SELECT min(time) FROM readings").fetchone()
            start = first[0] if first and first[0] is not None else new
        else:
            start = old
        ranges = align([*touched, (start, new)], MINUTE)
        for width_name, width in _WIDTHS:
            target_ranges = align(ranges, width)
            for lo, hi in target_ranges:
                conn.execute(
                    f"DELETE FROM {width_name} WHERE bucket >= %s AND bucket < %s", (lo, hi)
                )
                _recompute(conn, width_name, width, lo, hi)
        conn.execute(
            "INSERT INTO rollup_watermarks (name, watermark, refreshed_at) "
            "VALUES (%s, %s, now()) ON CONFLICT (name) DO UPDATE "
            "SET watermark = excluded.watermark, refreshed_at = excluded.refreshed_at",
            (WATERMARK, new),
        )
    return RefreshResult(watermark=new, ranges=tuple(ranges))


def _recompute(
    conn: psycopg.Connection[TupleRow],
    name: str,
    width: timedelta,
    lo: datetime,
    hi: datetime,
    *,
    sensor_key: int | None = None,
) -> None:
    """Insert the buckets of rollup ``name`` in [lo, hi) (of one sensor, or all) from the finer
    level; the caller has deleted them."""
    params: dict[str, object] = {"lo": lo, "hi": hi, "width": width, "sensor_key": sensor_key}
    sensor = "" if sensor_key is None else " AND sensor_key = %(sensor_key)s"
    if name == "readings_1m":
        conn.execute(_FROM_RAW.format(sensor=sensor), params)
    else:
        source = "readings_1m" if name == "readings_1h" else "readings_1h"
        conn.execute(_FROM_FINER.format(target=name, source=source, sensor=sensor), params)


def affected(lo: datetime, hi: datetime) -> list[tuple[str, Range]]:
    """Each rollup with the whole buckets of it that [lo, hi) touches."""
    return [(name, (floor(lo, width), ceil(hi, width))) for name, width in _WIDTHS]


def recompute_sensor(
    conn: psycopg.Connection[TupleRow], sensor_key: int, lo: datetime, hi: datetime
) -> int:
    """Partition mode: recompute one sensor's buckets that [lo, hi) touches, finest first, from
    what remains (raw rows for minutes, then minutes for hours, hours for days), in the
    caller's transaction; returns the bucket rows replaced."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REFRESH_LOCK,))
    replaced = 0
    for (name, width), (_, (start, end)) in zip(_WIDTHS, affected(lo, hi), strict=True):
        replaced += conn.execute(
            f"DELETE FROM {name} WHERE sensor_key = %s AND bucket >= %s AND bucket < %s",
            (sensor_key, start, end),
        ).rowcount
        _recompute(conn, name, width, start, end, sensor_key=sensor_key)
    return replaced
