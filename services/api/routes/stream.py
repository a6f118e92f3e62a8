"""/v1/stream: the live stream (Server-Sent Events) of new readings, KPI updates and alerts.

Each SSE message is one row of the event log (``services.storage.events``), filtered for the
client: ``event: readings`` carries the batch's new readings that pass the filters, ``event: kpi``
a KPI value that changed, ``event: alert`` an alert raised, acknowledged or cleared. The SSE
``id`` is the log's id, which follows commit order, so a client that reconnects with
``Last-Event-ID`` (browsers do it by themselves) gets exactly what it missed, as long as the log
still holds it (``URBANPULSE_EVENTS_RETENTION``, an hour by default); when it no longer does, the
first message is ``event: reset`` saying from where the stream resumes.

Each open stream polls the log on its own (an index range scan per second); FastAPI sends a
keep-alive comment when nothing happens, so proxies do not cut an idle stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Any

import psycopg
from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from gateway.kinds import QUANTITIES_BY_KEY
from services.storage import events

from ..deps import Streamer, get_pool
from ..problems import Problem

router = APIRouter(tags=["stream"])

EVENT_TYPES = ("readings", "kpi", "alert")
POLL_INTERVAL_S = 1.0
BATCH = 200  # log rows read a poll
SENSOR_INDEX_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class SensorInfo:
    id: str
    district_id: str | None
    domain: str


class SensorIndex:
    """sensor key -> id, district and domain, reloaded every minute or when a key is new."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[int, SensorInfo] = {}
        self._loaded = 0.0

    def lookup(self, conn: psycopg.Connection[TupleRow], keys: set[int]) -> dict[int, SensorInfo]:
        with self._lock:
            stale = time.monotonic() - self._loaded > SENSOR_INDEX_TTL_S
            # A new key reloads at most once a second, so a stream of unknown keys cannot turn
            # every poll into a registry scan.
            missing = bool(keys - self._by_key.keys()) and time.monotonic() - self._loaded > 1.0
            if stale or missing:
                rows = conn.execute("SELECT key, id, district_id, domain FROM sensors").fetchall()
                self._by_key = {int(k): SensorInfo(i, d, dom) for k, i, d, dom in rows}
                self._loaded = time.monotonic()
            return self._by_key


@dataclass(frozen=True, slots=True)
class StreamFilter:
    types: frozenset[str]
    districts: frozenset[str] | None
    domains: frozenset[str] | None
    sensors: frozenset[str] | None

    def admits(self, district: str | None, domain: str | None, sensor: str | None) -> bool:
        if self.districts is not None and district not in self.districts:
            return False
        if self.domains is not None and domain not in self.domains:
            return False
        return self.sensors is None or sensor in self.sensors


def _split(values: Sequence[str] | None) -> frozenset[str] | None:
    if not values:
        return None
    return frozenset(v.strip() for value in values for v in value.split(",") if v.strip())


def _message(
    event: events.Event, wanted: StreamFilter, sensors: dict[int, SensorInfo]
) -> ServerSentEvent | None:
    if event.type != "readings":
        if not wanted.admits(event.district_id, event.domain, event.sensor_id):
            return None
        return ServerSentEvent(id=str(event.id), event=event.type, data=event.data)
    readings: list[dict[str, Any]] = []
    for key, quantity_key, at, value in event.readings or ():
        sensor = sensors.get(key)
        if sensor is None or not wanted.admits(sensor.district_id, sensor.domain, sensor.id):
            continue
        quantity = QUANTITIES_BY_KEY.get(quantity_key)
        readings.append(
            {
                "sensor_id": sensor.id,
                "quantity": quantity.name if quantity else str(quantity_key),
                "unit": quantity.unit if quantity else None,
                "time": at.astimezone(UTC).isoformat(),
                "value": value,
                "district_id": sensor.district_id,
                "domain": sensor.domain,
            }
        )
    if not readings:
        return None
    return ServerSentEvent(id=str(event.id), event="readings", data={"readings": readings})


def _poll(
    pool: ConnectionPool,
    index: SensorIndex,
    after: int,
    wanted: StreamFilter,
) -> tuple[int, list[ServerSentEvent]]:
    """The next messages after ``after`` and the new cursor (the last log id looked at)."""
    with pool.connection() as conn:
        batch = events.read_after(conn, after, types=sorted(wanted.types), limit=BATCH)
        keys = {k for e in batch if e.readings for k, *_ in e.readings}
        sensors = index.lookup(conn, keys) if keys else {}
    messages = [m for e in batch if (m := _message(e, wanted, sensors)) is not None]
    return (batch[-1].id if batch else after), messages


def _start(pool: ConnectionPool, last_event_id: int | None) -> tuple[int, ServerSentEvent | None]:
    with pool.connection() as conn:
        if last_event_id is None:
            return events.last_id(conn), None
        oldest = events.oldest_id(conn)
    if oldest is not None and last_event_id < oldest - 1:
        reset = ServerSentEvent(
            event="reset",
            data={
                "reason": "events after the given Last-Event-ID were pruned (retention)",
                "last_event_id": last_event_id,
                "resumes_after": oldest - 1,
            },
        )
        return oldest - 1, reset
    return last_event_id, None


def _index(request: Request) -> SensorIndex:
    state = request.app.state
    if not hasattr(state, "sensor_index"):
        state.sensor_index = SensorIndex()
    index: SensorIndex = state.sensor_index
    return index


@dataclass(frozen=True, slots=True)
class StreamRequest:
    wanted: StreamFilter
    resume_after: int | None


def stream_request(
    *,
    type_: Annotated[
        list[str] | None,
        Query(alias="type", description="readings, kpi, alert (repeat or comma-separate)"),
    ] = None,
    district: Annotated[list[str] | None, Query(description="district ids")] = None,
    domain: Annotated[list[str] | None, Query(description="water, energy, waste...")] = None,
    sensor: Annotated[list[str] | None, Query(description="sensor ids")] = None,
    last_event_id: Annotated[
        str | None,
        Header(description="resume after this event id (browsers send it on reconnect)"),
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, description="resume after this event id (for clients that cannot set headers)"),
    ] = None,
) -> StreamRequest:
    """The stream's parameters, checked before the response starts (a 422 cannot follow a 200)."""
    types = _split(type_) or frozenset(EVENT_TYPES)
    unknown = types - set(EVENT_TYPES)
    if unknown:
        raise Problem(
            422,
            detail=f"unknown event type(s) {', '.join(sorted(unknown))}; "
            f"one of {', '.join(EVENT_TYPES)}",
            errors=[{"field": "query.type", "message": "unknown event type"}],
        )
    resume = after
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise Problem(
                422,
                detail="Last-Event-ID must be an event id this stream sent (a number)",
                errors=[{"field": "header.last-event-id", "message": "not an event id"}],
            )
        resume = int(last_event_id.strip())
    return StreamRequest(
        StreamFilter(types, _split(district), _split(domain), _split(sensor)), resume
    )


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    summary="Live stream of new readings, KPI updates and alerts (Server-Sent Events)",
    responses={
        200: {
            "description": (
                "text/event-stream; `event:` is readings, kpi, alert or reset; `id:` is the "
                "resume point to send back as Last-Event-ID."
            )
        }
    },
)
async def stream(
    request: Request,
    _principal: Streamer,
    params: Annotated[StreamRequest, Depends(stream_request)],
) -> AsyncIterator[ServerSentEvent]:
    pool = get_pool(request)
    index = _index(request)
    cursor, reset = await to_thread.run_sync(_start, pool, params.resume_after)
    if reset is not None:
        yield reset
    while not await request.is_disconnected():
        cursor, messages = await to_thread.run_sync(_poll, pool, index, cursor, params.wanted)
        for message in messages:
            yield message
        if not messages:
            await asyncio.sleep(POLL_INTERVAL_S)
