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

What one stream may cost is bounded (a stream resuming from ``Last-Event-ID: 0`` once held
~85 MB, 200 events of 5,000 readings built at once): a poll reads at most
``URBANPULSE_API_STREAM_PAGE_READINGS`` readings and messages are built one at a time, as the
reader takes them; a reader that takes nothing for ``URBANPULSE_API_STREAM_STALL_TIMEOUT`` is
disconnected (:class:`StallGuard`) and resumes with ``Last-Event-ID``; streams are capped per
key and per process (:class:`StreamSlots`); and the key is re-checked every
``URBANPULSE_API_STREAM_KEY_RECHECK``, so a revoked key's stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Any

import anyio
import psycopg
from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.kinds import QUANTITIES_BY_KEY
from services.settings import Settings
from services.storage import events

from ..auth import Authenticator, Principal
from ..deps import Streamer, get_pool
from ..guards import too_many
from ..problems import Problem, responses

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])

EVENT_TYPES = ("readings", "kpi", "alert")
POLL_INTERVAL_S = 1.0
BATCH = 200  # log rows read a poll, at most (and at most the settings' page of readings)
SENSOR_INDEX_TTL_S = 60.0
# Event ids are PostgreSQL bigints: a longer number is not one this stream sent.
MAX_EVENT_ID = 2**63 - 1
MAX_EVENT_ID_DIGITS = len(str(MAX_EVENT_ID))
# When a refused stream may try again: streams are long-lived, so not at once.
RETRY_AFTER_S = 10


class StreamSlots:
    """Open streams, counted per key and in all, refused past the caps (thread-safe)."""

    def __init__(self, max_total: int, max_per_key: int) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, key_id: str) -> None:
        with self._lock:
            if self._open[key_id] >= self.max_per_key:
                raise too_many(
                    f"this key has {self.max_per_key} live streams open already "
                    "(URBANPULSE_API_STREAM_MAX_PER_KEY); close one first",
                    RETRY_AFTER_S,
                )
            if self._open.total() >= self.max_total:
                raise Problem(
                    503,
                    "Too many streams",
                    f"this server has {self.max_total} live streams open "
                    "(URBANPULSE_API_STREAM_MAX); try again later",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            self._open[key_id] += 1

    def release(self, key_id: str) -> None:
        with self._lock:
            self._open[key_id] -= 1
            if self._open[key_id] <= 0:
                del self._open[key_id]

    def open_count(self) -> int:
        with self._lock:
            return self._open.total()


async def stream_slot(request: Request, principal: Streamer) -> AsyncIterator[Principal]:
    """Holds one of the caller's stream slots for as long as its stream is open."""
    slots: StreamSlots = request.app.state.streams
    slots.acquire(principal.key_id)
    try:
        yield principal
    finally:
        slots.release(principal.key_id)


class _StalledReaderError(Exception):
    """A send waited longer than the stall timeout (not an OSError: Starlette would take one
    for a client that went away and end quietly without our log line)."""


class StallGuard:
    """Closes a stream whose reader takes nothing for ``timeout_s``: the server then holds at
    most what the socket and one message buffer, instead of a stream that never ends."""

    def __init__(self, app: ASGIApp, *, path: str, timeout_s: float) -> None:
        self.app = app
        self.path = path
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        stalled = False

        async def guarded_send(message: Message) -> None:
            nonlocal stalled
            try:
                with anyio.fail_after(self.timeout_s):
                    await send(message)
            except TimeoutError:
                stalled = True
                raise _StalledReaderError from None

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            # The stall comes back wrapped by the SSE machinery's task groups, with the
            # errors it caused in the tasks beside it (a broken memory stream): once the
            # reader stalled, all of that is this stream ending, not a fault to report.
            if not stalled:
                raise
            client = scope.get("client")
            log.warning(
                "closed a live stream to %s: its reader took nothing for %g s",
                client[0] if client else "?",
                self.timeout_s,
            )


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
    max_readings: int,
) -> tuple[int, list[events.Event], dict[int, SensorInfo]]:
    """The next page of the log after ``after`` (at most ``max_readings`` readings), the new
    cursor (the last log id looked at) and the sensors its readings name."""
    with pool.connection() as conn:
        batch = events.read_after(
            conn, after, types=sorted(wanted.types), limit=BATCH, max_readings=max_readings
        )
        keys = {k for e in batch if e.readings for k, *_ in e.readings}
        sensors = index.lookup(conn, keys) if keys else {}
    return (batch[-1].id if batch else after), batch, sensors


def _messages(
    batch: list[events.Event], wanted: StreamFilter, sensors: dict[int, SensorInfo]
) -> Iterator[ServerSentEvent]:
    """The page's messages, each built only when the reader is ready for it; an event is
    dropped from the page once its message is made, so a stalled reader pins one message."""
    while batch:
        message = _message(batch.pop(0), wanted, sensors)
        if message is not None:
            yield message


def _start(pool: ConnectionPool, last_event_id: int | None) -> tuple[int, ServerSentEvent | None]:
    with pool.connection() as conn:
        newest = events.last_id(conn)
        if last_event_id is None:
            return newest, None
        oldest = events.oldest_id(conn)
    if last_event_id > newest:
        # Not an id this log handed out (another database, or made up): waiting for the log to
        # reach it would send nothing, maybe for ever. Resume from now, and say so.
        reset = ServerSentEvent(
            event="reset",
            data={
                "reason": "the given Last-Event-ID is past the newest event",
                "last_event_id": last_event_id,
                "resumes_after": newest,
            },
        )
        return newest, reset
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
        Query(
            ge=0,
            le=MAX_EVENT_ID,
            description="resume after this event id (for clients that cannot set headers)",
        ),
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
        given = last_event_id.strip()
        if (
            not given.isascii()
            or not given.isdigit()
            or len(given) > MAX_EVENT_ID_DIGITS
            or int(given) > MAX_EVENT_ID
        ):
            raise Problem(
                422,
                detail="Last-Event-ID must be an event id this stream sent (a number)",
                errors=[{"field": "header.last-event-id", "message": "not an event id"}],
            )
        resume = int(given)
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
                "resume point to send back as Last-Event-ID. The stream ends when its key is "
                "revoked, or when the reader takes nothing for the stall timeout."
            )
        },
        **responses(401, 403, 422, 429, 503),
    },
)
async def stream(
    request: Request,
    principal: Annotated[Principal, Depends(stream_slot)],
    params: Annotated[StreamRequest, Depends(stream_request)],
) -> AsyncIterator[ServerSentEvent]:
    """New readings, KPI updates and alerts as they are stored, as Server-Sent Events.

    Resume with `Last-Event-ID` (or `after=`): an id the log no longer holds, or one past its
    newest event, starts the stream with an `event: reset` saying from where it resumes.

    **Limits** (settings of the server; defaults in brackets):

    - at most `URBANPULSE_API_STREAM_MAX_PER_KEY` (8) streams open per key, else 429 with
      `Retry-After`; at most `URBANPULSE_API_STREAM_MAX` (100) per server process, else 503;
    - a poll reads at most `URBANPULSE_API_STREAM_PAGE_READINGS` (5,000) readings of the log,
      and messages are made one at a time as the reader takes them;
    - a reader that takes nothing for `URBANPULSE_API_STREAM_STALL_TIMEOUT` (30 s) is
      disconnected: reconnect with the last `id:` received as `Last-Event-ID`;
    - the key is checked again every `URBANPULSE_API_STREAM_KEY_RECHECK` (10 s): the stream of
      a revoked key ends.
    """
    pool = get_pool(request)
    index = _index(request)
    settings: Settings = request.app.state.settings
    authenticator: Authenticator = request.app.state.authenticator
    recheck_s = settings.api_stream_key_recheck.total_seconds()
    checked = time.monotonic()
    cursor, reset = await to_thread.run_sync(_start, pool, params.resume_after)
    if reset is not None:
        yield reset
    while not await request.is_disconnected():
        if time.monotonic() - checked >= recheck_s:
            if not await to_thread.run_sync(authenticator.still_valid, principal):
                log.info("ended a live stream of key %s: revoked or gone", principal.key_id)
                return
            checked = time.monotonic()
        cursor, batch, sensors = await to_thread.run_sync(
            _poll, pool, index, cursor, params.wanted, settings.api_stream_page_readings
        )
        caught_up = not batch
        for message in _messages(batch, params.wanted, sensors):
            yield message
        if caught_up:
            await asyncio.sleep(min(POLL_INTERVAL_S, recheck_s))
