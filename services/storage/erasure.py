"""Erasure of one sensor's raw readings over a range, audited (table ``erasures``).

Every erasure is recorded before it starts (who, when, the sensor, the range, why, the rollup
mode) and completed with what it removed, so the audit shows unfinished ones too. The raw rows
of both readings tables go in committed batches through ``urbanpulse_erase_batch`` (migration
0012), which deletes only what an open erasure names: the API's role may call it, but may not
delete readings itself. The range is bounded by ``max_span``.

``rollups="keep"`` leaves the rollups as they were: they are brought up to date over the range
first (so that what is kept is complete), and the deletion is kept from reaching them. In
TimescaleDB mode a deletion logs an invalidation when its transaction commits, and any refresh
that sees it (a policy job, ingestion's minute round) rebuilds those buckets from what remains;
with batches committed one by one, a refresh between two batches rebuilt the kept buckets from
partly erased rows. So each batch deletes with ``timescaledb.skip_cagg_invalidation`` set for
its transaction (TimescaleDB 2.28 on): it logs nothing, and no refresh, during the erasure or
after, can see it. A concurrent writer's invalidations in the range are left alone. Older
TimescaleDB lacks that setting: there the invalidations are forgotten after every batch
(``urbanpulse_forget_invalidations``, which also forgets a concurrent writer's), which narrows
the race to the moment between a batch's commit and that call but cannot close it.

``rollups="recompute"`` takes the sensor's data out of the rollups too: every bucket the range
touches is recomputed from what remains. Partition mode does it for the sensor alone;
TimescaleDB refreshes the aggregates over the range (every sensor's buckets there). Either way
the range must be newer than ``retention.refresh_floor``, where every series still has its raw
rows: an older edge bucket rebuilt from raw rows that are gone would lose what was not erased.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import TupleRow, dict_row

from . import rollups
from .errors import FieldError, SensorNotFoundError
from .retention import BATCH_ROWS, refresh_floor

__all__ = ["InvalidErasureError", "Request", "SensorNotFoundError", "erase", "listed"]

Conn = psycopg.Connection[TupleRow]
log = logging.getLogger(__name__)

MODES = ("keep", "recompute")
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
COLUMNS = (
    "id, requested_at, actor, sensor_id, range_start, range_end, reason, rollups, rows_erased, "
    "buckets_recomputed, finished_at"
)


class InvalidErasureError(FieldError):
    """A refused erasure request; ``field`` names the bad input."""


@dataclass(frozen=True, slots=True)
class Request:
    sensor_id: str
    start: datetime
    end: datetime
    reason: str
    rollups: str
    actor: str

    def check(self, max_span: timedelta) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidErasureError("start", "times need a UTC offset")
        for name, moment in (("start", self.start), ("end", self.end)):
            # Bucket arithmetic around the range must stay within what datetime can carry.
            if not EARLIEST <= moment <= LATEST:
                raise InvalidErasureError(name, f"must lie between {EARLIEST:%Y} and {LATEST:%Y}")
        if self.end <= self.start:
            raise InvalidErasureError("end", "must be after start")
        if self.end - self.start > max_span:
            raise InvalidErasureError(
                "end",
                f"the range may span at most {max_span.days} days "
                "(URBANPULSE_ERASURE_MAX_SPAN); erase a longer one in parts",
            )
        if not self.reason.strip():
            raise InvalidErasureError("reason", "say why the data is erased")
        if self.rollups not in MODES:
            raise InvalidErasureError("rollups", f"must be one of {', '.join(MODES)}")


def erase(
    conn: Conn,
    mode: str,
    request: Request,
    *,
    max_span: timedelta,
    batch_rows: int = BATCH_ROWS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Erase as ``request`` says; commits as it goes; returns the completed audit row.
    Raises InvalidErasureError or SensorNotFoundError before anything is written."""
    request.check(max_span)
    row = conn.execute("SELECT key FROM sensors WHERE id = %s", (request.sensor_id,)).fetchone()
    if row is None:
        raise SensorNotFoundError(request.sensor_id)
    key = int(row[0])
    if request.rollups == "recompute":
        floor = refresh_floor(conn, "1m", now)
        if floor is not None and request.start < floor:
            raise InvalidErasureError(
                "start",
                f"rollups are recomputed only from {floor:%Y-%m-%d %H:%M} UTC on (older raw "
                "readings may be gone, and a rebuilt edge bucket would lose them); use "
                "rollups=keep",
            )
    conn.commit()
    if request.rollups == "keep":
        # What is kept must be complete: roll the range up before its raw rows go.
        if mode == "timescaledb":
            _refresh(conn, request.start)
        else:
            try:
                rollups.refresh(conn, mode)
            except psycopg.errors.InsufficientPrivilege:
                # The API's role does not keep the rollups: ingestion does, every minute; only
                # the minute still running may then leave with the raw rows.
                conn.rollback()
    erasure_id = _record(conn, request)
    touched = _sensor_buckets(conn, key, request) if request.rollups == "recompute" else 0
    keep = _Keep.NONE
    if request.rollups == "keep" and mode == "timescaledb":
        keep = _Keep.SKIP if _can_skip_invalidation(conn) else _Keep.FORGET
    erased = _delete(conn, erasure_id, batch_rows, keep)
    if request.rollups == "recompute":
        if mode == "timescaledb":
            _refresh(conn, request.start)
        else:
            rollups.recompute_sensor(conn, key, request.start, request.end)
            conn.commit()
    finished = conn.execute(
        f"UPDATE erasures SET rows_erased = %s, buckets_recomputed = %s, finished_at = now() "
        f"WHERE id = %s RETURNING {COLUMNS}",
        (erased, touched, erasure_id),
    ).fetchone()
    conn.commit()
    return _as_dict(finished)


def listed(conn: Conn, *, sensor_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The audit, newest first (of one sensor, or all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {COLUMNS} FROM erasures WHERE %(sensor)s::text IS NULL "
            "OR sensor_id = %(sensor)s ORDER BY id DESC LIMIT %(limit)s",
            {"sensor": sensor_id, "limit": limit},
        ).fetchall()


def _as_dict(row: tuple[Any, ...] | None) -> dict[str, Any]:
    assert row is not None
    return dict(zip([c.strip() for c in COLUMNS.split(",")], row, strict=True))


def _refresh(conn: Conn, start: datetime) -> None:
    """TimescaleDB: refresh the aggregates from the erasure's day on. Only their owner may; for
    another role (the API's) their policies do it within their schedule, which covers the range
    (it is newer than the refresh floor)."""
    try:
        rollups.refresh_range(conn, *_from_day(start))
    except psycopg.errors.InsufficientPrivilege as exc:
        log.warning("erasure: the aggregates' policies will refresh them (%s)", exc)


def _from_day(start: datetime) -> tuple[datetime, None]:
    """The refresh window of an erasure: from the UTC day of its start (the 1-day aggregate
    refreshes whole buckets) on, open-ended. Only invalidated buckets are recomputed, so the
    open end costs little; a window with an end past the aggregate's invalidation threshold
    left its last invalidated minute stale in TimescaleDB 2.28 (measured: the 23:00 minute of
    a day erased up to midnight survived)."""
    return rollups.floor(start, timedelta(days=1)), None


def _record(conn: Conn, request: Request) -> int:
    row = conn.execute(
        "INSERT INTO erasures (actor, sensor_id, range_start, range_end, reason, rollups) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (
            request.actor,
            request.sensor_id,
            request.start,
            request.end,
            request.reason,
            request.rollups,
        ),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def _sensor_buckets(conn: Conn, key: int, request: Request) -> int:
    """The sensor's rollup rows in the buckets the range touches: what a recompute replaces."""
    total = 0
    for name, (lo, hi) in rollups.affected(request.start, request.end):
        row = conn.execute(
            f"SELECT count(*) FROM {name} WHERE sensor_key = %s AND bucket >= %s AND bucket < %s",
            (key, lo, hi),
        ).fetchone()
        total += int(row[0]) if row else 0
    conn.commit()
    return total


class _Keep(enum.Enum):
    """How a TimescaleDB erasure keeping the rollups keeps its deletion from reaching them."""

    NONE = "none"  # not needed: partition mode, or the rollups are recomputed
    SKIP = "skip"  # the deletion logs no invalidation (timescaledb.skip_cagg_invalidation)
    FORGET = "forget"  # older TimescaleDB: its invalidations are forgotten after each batch


_SKIP_SETTING = "timescaledb.skip_cagg_invalidation"


def _can_skip_invalidation(conn: Conn) -> bool:
    row = conn.execute("SELECT current_setting(%s, true)", (_SKIP_SETTING,)).fetchone()
    conn.commit()
    return row is not None and row[0] is not None


def _delete(conn: Conn, erasure_id: int, batch_rows: int, keep: _Keep = _Keep.NONE) -> int:
    """Delete the erasure's rows of both readings tables, in committed batches, through the
    function that allows only that (migration 0012: the API may not delete readings)."""
    done = 0
    while True:
        deleted = _batch(conn, erasure_id, batch_rows, keep)
        done += deleted
        if deleted < batch_rows:
            return done


def _batch(conn: Conn, erasure_id: int, batch_rows: int, keep: _Keep) -> int:
    """One batch, committed; what it deleted."""
    if keep is _Keep.SKIP:
        # For this transaction only: a writer sharing the connection later logs as usual.
        conn.execute("SELECT set_config(%s, 'on', true)", (_SKIP_SETTING,))
    row = conn.execute("SELECT urbanpulse_erase_batch(%s, %s)", (erasure_id, batch_rows)).fetchone()
    conn.commit()
    if keep is _Keep.FORGET:
        conn.execute("SELECT urbanpulse_forget_invalidations(%s)", (erasure_id,))
        conn.commit()
    return int(row[0]) if row else 0
