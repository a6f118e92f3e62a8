"""Rollups: per sensor and quantity, 1 minute, 1 hour and 1 day buckets.

Each row carries count, sum, min, max, first and last (with the times of the first and last
reading), so averages, totals of cumulative meters and completeness can all be derived.

With TimescaleDB they are continuous aggregates kept by refresh policies (real-time aggregation
on); ``refresh`` only forces them. In partition mode they are tables, and ``refresh`` brings them
up to the start of the current minute: it recomputes the buckets between the watermark and now,
and every bucket the writers touched below the watermark since the last refresh (late data,
gateway replays, found in ``rollup_invalidations``). Rollups below the watermark therefore equal a
direct aggregation of the raw rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

WATERMARK = "rollups"
# A single refresher at a time, whichever process calls it.
_REFRESH_LOCK = 7_210_002
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_WIDTHS = (
    ("readings_1m", timedelta(minutes=1)),
    ("readings_1h", timedelta(hours=1)),
    ("readings_1d", timedelta(days=1)),
)

_FROM_RAW = """
INSERT INTO readings_1m
SELECT date_bin('1 minute', time, '1970-01-01Z') AS bucket, sensor_key, quantity_key,
       count(*), sum(value), min(value), max(value),
       (array_agg(value ORDER BY time))[1], (array_agg(value ORDER BY time DESC))[1],
       min(time), max(time)
FROM readings WHERE time >= %(lo)s AND time < %(hi)s
GROUP BY 1, sensor_key, quantity_key
"""

_FROM_FINER = """
INSERT INTO {target}
SELECT date_bin(%(width)s, bucket, '1970-01-01Z') AS bucket, sensor_key, quantity_key,
       sum(count)::bigint, sum(sum), min(min), max(max),
       (array_agg(first ORDER BY first_time))[1], (array_agg(last ORDER BY last_time DESC))[1],
       min(first_time), max(last_time)
FROM {source} WHERE bucket >= %(lo)s AND bucket < %(hi)s
GROUP BY 1, sensor_key, quantity_key
"""

Range = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class RefreshResult:
    watermark: datetime | None
    ranges: tuple[Range, ...]  # the minute-aligned ranges recomputed


def _floor(moment: datetime, width: timedelta) -> datetime:
    return _EPOCH + ((moment - _EPOCH) // width) * width


def _ceil(moment: datetime, width: timedelta) -> datetime:
    floor = _floor(moment, width)
    return floor if floor == moment else floor + width


def align(ranges: list[Range], width: timedelta) -> list[Range]:
    """Widen each range to whole buckets of ``width`` and merge those that touch."""
    widened = sorted((_floor(lo, width), _ceil(hi, width)) for lo, hi in ranges if lo < hi)
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
    conn.commit()
    previous = conn.autocommit
    conn.autocommit = True  # refresh_continuous_aggregate refuses to run in a transaction
    try:
        for name, _ in _WIDTHS:
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (name,))
    finally:
        conn.autocommit = previous
    return RefreshResult(watermark=None, ranges=())


def _refresh_partitioned(conn: psycopg.Connection[TupleRow], now: datetime) -> RefreshResult:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REFRESH_LOCK,))
        row = conn.execute(
            "SELECT watermark FROM rollup_watermarks WHERE name = %s", (WATERMARK,)
        ).fetchone()
        old: datetime | None = row[0] if row else None
        new = (
            max(_floor(now, timedelta(minutes=1)), old)
            if old
            else _floor(now, timedelta(minutes=1))
        )
        # Take the invalidations before reading the readings: a writer that commits in between
        # leaves its invalidation for the next refresh, so nothing is missed.
        touched: list[Range] = [
            (lo, min(hi + timedelta(microseconds=1), new))
            for lo, hi in conn.execute(
                "DELETE FROM rollup_invalidations RETURNING lo, hi"
            ).fetchall()
            if old is None or lo < old
        ]
        if old is None:
            first = conn.execute("SELECT min(time) FROM readings").fetchone()
            start = first[0] if first and first[0] is not None else new
        else:
            start = old
        ranges = align([*touched, (start, new)], timedelta(minutes=1))
        for width_name, width in _WIDTHS:
            target_ranges = align(ranges, width)
            for lo, hi in target_ranges:
                conn.execute(
                    f"DELETE FROM {width_name} WHERE bucket >= %s AND bucket < %s", (lo, hi)
                )
                params = {"lo": lo, "hi": hi, "width": width}
                if width_name == "readings_1m":
                    conn.execute(_FROM_RAW, params)
                else:
                    source = "readings_1m" if width_name == "readings_1h" else "readings_1h"
                    conn.execute(_FROM_FINER.format(target=width_name, source=source), params)
        conn.execute(
            "INSERT INTO rollup_watermarks (name, watermark, refreshed_at) "
            "VALUES (%s, %s, now()) ON CONFLICT (name) DO UPDATE "
            "SET watermark = excluded.watermark, refreshed_at = excluded.refreshed_at",
            (WATERMARK, new),
        )
    return RefreshResult(watermark=new, ranges=tuple(ranges))
