"""GET /v1/sensors/{id}/readings: one quantity of one sensor over a time range, downsampled.

``resolution=auto`` picks the finest of raw, 1m, 1h, 1d that yields at most
:data:`AUTO_POINTS` points (raw counted from the sensor's nominal interval), so a day of a
minutely meter comes raw, a month from ``readings_1h`` and a year from ``readings_1d``: the
query's cost follows the points returned, not the history stored. An explicit resolution is
served as asked, up to :data:`MAX_POINTS`. Rollup points carry ``value`` = mean (sum/count),
``min``, ``max`` and ``count``. Rollups are refreshed from a watermark, so the newest minutes
may be missing from them until the next refresh; ``raw`` always has them.

A bucket cut by ``start`` or ``end`` holds only its readings inside ``[start, end)`` (the first
one is stamped ``start``): it is aggregated from the coarsest rollups that tile that piece
exactly (``services.storage.rollups.tiled``), so a year off the hour costs what a year on whole
days costs. Each resolution has a longest range (``URBANPULSE_API_MAX_SPAN_RAW``, ``_1M``,
``_1H``, ``_1D``); a longer one is refused with 422 before any query.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from psycopg.rows import TupleRow
from pydantic import AwareDatetime, BaseModel, Field

from gateway.kinds import KINDS, QUANTITIES
from services.settings import Settings
from services.storage import rollups

from ..deps import Reader, read_connection
from ..problems import Problem, invalid, limit_refused, responses, span_text

router = APIRouter(tags=["readings"])

AUTO_POINTS = 2000
# A hard cap on one answer (~5 MB of JSON): a client wanting more pages by time range.
MAX_POINTS = 100_000
DEFAULT_SPAN = timedelta(hours=24)


class Resolution(StrEnum):
    AUTO = "auto"
    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"
    DAY = "1d"


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


_WIDTH_S = {Resolution.MINUTE: 60, Resolution.HOUR: 3600, Resolution.DAY: 86400}
_TABLE = {
    Resolution.MINUTE: "readings_1m",
    Resolution.HOUR: "readings_1h",
    Resolution.DAY: "readings_1d",
}


class Point(BaseModel):
    time: datetime = Field(description="reading time, or the bucket's start for rollups")
    value: float = Field(description="the reading, or the bucket's mean")
    min: float | None = None
    max: float | None = None
    count: int | None = None


class Series(BaseModel):
    sensor_id: str = Field(examples=["wm-0001"])
    quantity: str = Field(examples=["index"])
    unit: str = Field(examples=["m3"])
    resolution: Resolution = Field(description="the resolution served (never auto)")
    start: datetime
    end: datetime
    points: list[Point]


def choose(requested: Resolution, span_s: float, interval_s: float) -> Resolution:
    """The resolution to serve for a range of ``span_s`` seconds of a sensor reporting every
    ``interval_s``: the finest one with at most AUTO_POINTS points (1d when none has)."""
    if requested is not Resolution.AUTO:
        return requested
    if span_s / interval_s <= AUTO_POINTS:
        return Resolution.RAW
    for resolution in (Resolution.MINUTE, Resolution.HOUR):
        if span_s / _WIDTH_S[resolution] <= AUTO_POINTS:
            return resolution
    return Resolution.DAY


def max_span(settings: Settings, resolution: Resolution) -> timedelta:
    """The longest range served at ``resolution`` (never auto)."""
    return {
        Resolution.RAW: settings.api_max_span_raw,
        Resolution.MINUTE: settings.api_max_span_1m,
        Resolution.HOUR: settings.api_max_span_1h,
        Resolution.DAY: settings.api_max_span_1d,
    }[resolution]


def span_problem(
    settings: Settings, served: Resolution, start: datetime, end: datetime
) -> Problem | None:
    """The 422 refusing a range longer than ``served`` allows, naming the limit; else None."""
    limit = max_span(settings, served)
    if end - start <= limit:
        return None
    setting = f"URBANPULSE_API_MAX_SPAN_{served.value.upper()}"
    coarsest = served is Resolution.DAY
    return limit_refused(
        "query.start" if coarsest else "query.resolution",
        f"{served.value} readings cover at most {span_text(limit)} ({setting}); this range covers "
        f"{span_text(end - start)}: narrow it"
        + ("" if coarsest else " or choose a coarser resolution"),
        setting,
        seconds=limit.total_seconds(),
    )


def expected_points(resolution: Resolution, span_s: float, interval_s: float) -> float:
    return span_s / (interval_s if resolution is Resolution.RAW else _WIDTH_S[resolution])


def _csv(points: list[Point], rollup: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "value", "min", "max", "count"] if rollup else ["time", "value"])
    for p in points:
        row: list[Any] = [p.time.isoformat(), repr(p.value)]
        if rollup:
            row += [repr(p.min), repr(p.max), p.count]
        writer.writerow(row)
    return out.getvalue()


@router.get(
    "/sensors/{sensor_id}/readings",
    response_model=Series,
    responses={
        **responses(401, 403, 404, 422),
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    },
)
async def get_readings(
    _: Reader,
    request: Request,
    sensor_id: Annotated[str, Path(max_length=128, examples=["wm-0001"])],
    *,
    quantity: Annotated[
        str | None,
        Query(max_length=64, description="optional when the kind measures one quantity"),
    ] = None,
    start: Annotated[AwareDatetime | None, Query(description="default: end - 24 h")] = None,
    end: Annotated[AwareDatetime | None, Query(description="default: now")] = None,
    resolution: Resolution = Resolution.AUTO,
    format: Annotated[
        Format | None, Query(description="json or csv (or send Accept: text/csv)")
    ] = None,
) -> Any:
    """Readings of one quantity in ``[start, end)``, oldest first."""
    async with read_connection(request) as conn:
        return await _read(
            conn,
            request,
            sensor_id,
            quantity=quantity,
            start=start,
            end=end,
            resolution=resolution,
            format=format,
        )


# sensor id -> (key, kind, interval) and when it was read. A sensor's key and kind never change
# and its interval rarely does, so a short memory saves one query of the two a request makes.
SENSOR_TTL_S = 10.0
SENSORS_KEPT = 10_000


async def _sensor(
    conn: psycopg.AsyncConnection[TupleRow], request: Request, sensor_id: str
) -> tuple[int, str, float]:
    state = request.app.state
    if not hasattr(state, "reading_sensors"):
        state.reading_sensors = {}
    known: dict[str, tuple[float, tuple[int, str, float]]] = state.reading_sensors
    now = time.monotonic()
    hit = known.get(sensor_id)
    if hit is not None and now - hit[0] < SENSOR_TTL_S:
        return hit[1]
    cursor = await conn.execute(
        "SELECT key, kind, interval_s FROM sensors WHERE id = %s", (sensor_id,)
    )
    row = await cursor.fetchone()
    if row is None:
        raise Problem(404, detail=f"no sensor {sensor_id!r}")
    sensor = (int(row[0]), str(row[1]), float(row[2]))
    if len(known) >= SENSORS_KEPT:
        known.clear()
    known[sensor_id] = (now, sensor)
    return sensor


async def _read(
    conn: psycopg.AsyncConnection[TupleRow],
    request: Request,
    sensor_id: str,
    *,
    quantity: str | None,
    start: datetime | None,
    end: datetime | None,
    resolution: Resolution,
    format: Format | None,
) -> Any:
    sensor_key, kind_name, interval_s = await _sensor(conn, request, sensor_id)
    measured = list(KINDS[kind_name].quantities) if kind_name in KINDS else []
    if quantity is None:
        if len(measured) != 1:
            raise invalid(
                "query.quantity", f"required: a {kind_name} measures {', '.join(measured)}"
            )
        quantity = measured[0]
    if quantity not in measured:
        raise invalid(
            "query.quantity",
            f"a {kind_name} does not measure {quantity!r}; it measures {', '.join(measured)}",
        )
    end = end or datetime.now(UTC)
    start = start or end - DEFAULT_SPAN
    if end <= start:
        raise invalid("query.end", "must be after start")
    span_s = (end - start).total_seconds()
    served = choose(resolution, span_s, interval_s)
    refused = span_problem(request.app.state.settings, served, start, end)
    if refused is not None:
        raise refused
    if expected_points(served, span_s, interval_s) > MAX_POINTS:
        raise invalid(
            "query.resolution",
            f"{served.value} over this range is more than {MAX_POINTS} points; "
            "narrow the range or choose a coarser resolution (or auto)",
        )
    key = QUANTITIES[quantity].key
    if served is Resolution.RAW:
        cursor = await conn.execute(
            "SELECT time, value FROM readings WHERE sensor_key = %s AND quantity_key = %s "
            "AND time >= %s AND time < %s ORDER BY time LIMIT %s",
            (sensor_key, key, start, end, MAX_POINTS + 1),
        )
        rows = await cursor.fetchall()
        if len(rows) > MAX_POINTS:
            # More readings than the nominal interval promised (a chatty sensor).
            raise invalid(
                "query.resolution", f"raw over this range is more than {MAX_POINTS} points"
            )
    else:
        statement, values = rollup_query(served, sensor_key, key, start, end)
        # Never prepared: a generic plan knows no bound, so it would plan every partition of
        # readings that a cut minute's raw legs may read, and prune them only as it starts.
        cursor = await conn.execute(statement, values, prepare=False)
        rows = await cursor.fetchall()
    wants_csv = format is Format.CSV or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if not wants_csv:
        return _json(sensor_id, quantity, served=served, start=start, end=end, rows=rows)
    points = (
        [Point(time=t, value=v) for t, v in rows]
        if served is Resolution.RAW
        else [Point(time=t, value=v, min=lo, max=hi, count=n) for t, v, lo, hi, n in rows]
    )
    return Response(
        _csv(points, served is not Resolution.RAW),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{sensor_id}-{quantity}.csv"'},
    )


def _json(
    sensor_id: str,
    quantity: str,
    *,
    served: Resolution,
    start: datetime,
    end: datetime,
    rows: list[tuple[Any, ...]],
) -> Response:
    """The Series body, written straight from the rows: a week of hourly points as pydantic
    models and their validation cost more than the query (bench/bench_api.py)."""
    if served is Resolution.RAW:
        points = [
            {"time": t.isoformat(), "value": v, "min": None, "max": None, "count": None}
            for t, v in rows
        ]
    else:
        points = [
            {"time": t.isoformat(), "value": v, "min": lo, "max": hi, "count": n}
            for t, v, lo, hi, n in rows
        ]
    body = {
        "sensor_id": sensor_id,
        "quantity": quantity,
        "unit": QUANTITIES[quantity].unit,
        "resolution": served.value,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "points": points,
    }
    return Response(json.dumps(body, allow_nan=False), media_type="application/json")


# A piece of a bucket cut by start or end, stamped with the piece's start: its readings from
# the rollups that tile it (an empty piece gives no row).
def _piece(lo: str, hi: str, cut_minutes: str | None) -> str:
    tiles = rollups.tiled("%(sensor)s", lo, hi, "%(quantity)s", cut_minutes=cut_minutes)
    point = "sum(r.sum) / sum(r.count), min(r.min), max(r.max), sum(r.count)::bigint"
    return f"SELECT {lo}, {point} FROM {tiles} AS r HAVING sum(r.count) > 0"  # noqa: S608


def rollup_query(
    served: Resolution, sensor: int, quantity: int, start: datetime, end: datetime
) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of the points at ``served`` over [start, end): whole buckets
    from its rollup, the cut buckets at either edge tiled. The left piece ends where whole
    buckets start (or at end); the right one starts where whole buckets end, never before the
    left piece's end. Every bound is a bind parameter, the minutes a piece's bounds cut too, so
    the planner prunes the partitions of ``readings`` a piece does not need; a piece on whole
    minutes reads no raw readings, and an empty piece is left out."""
    width = timedelta(seconds=_WIDTH_S[served])
    whole_start, whole_end = rollups.ceil(start, width), rollups.floor(end, width)
    left_end, right_start = min(whole_start, end), max(whole_end, whole_start)
    values: dict[str, Any] = {
        "sensor": sensor,
        "quantity": quantity,
        "start": start,
        "end": end,
        "whole_start": whole_start,
        "whole_end": whole_end,
        "left_end": left_end,
        "right_start": right_start,
    }
    parts = [
        f"SELECT bucket, sum / count, min, max, count FROM {_TABLE[served]} "  # noqa: S608 - table name from _TABLE
        "WHERE sensor_key = %(sensor)s AND quantity_key = %(quantity)s "
        "AND bucket >= %(whole_start)s AND bucket < %(whole_end)s"
    ]
    if start < left_end:
        cut, cut_values = rollups.cut_minutes([start, left_end], name="left_cut")
        parts.insert(0, _piece("%(start)s::timestamptz", "%(left_end)s::timestamptz", cut))
        values.update(cut_values)
    if right_start < end:
        cut, cut_values = rollups.cut_minutes([right_start, end], name="right_cut")
        parts.append(_piece("%(right_start)s::timestamptz", "%(end)s::timestamptz", cut))
        values.update(cut_values)
    return "\nUNION ALL ".join(parts) + "\nORDER BY 1", values
