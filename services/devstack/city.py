"""The simulated city of ``urbanpulse up``: registered, a week of history backfilled, and live.

The first screen must be true within a minute, so the order matters:

1. today (from the city's local midnight) is backfilled first, as fast as possible;
2. the live run starts at once, and the older days follow in the background, newest first;
3. a watcher waits until the database holds what each part sent, refreshes the rollups and tells
   ``on_ready`` ("today", then "history"): ``urbanpulse up`` runs the monitor's first round on
   today as soon as today is in, and every period once the week is.

The sensors are registered as installed when their history begins (kept in ``<state>/installed``
across restarts), so a KPI of the month or the year is judged from then, not from a date long
before the first reading. Readings are pure functions of (sensor, time): backfilling the same
days again after a restart re-sends identical readings, which the idempotent write path absorbs.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from gateway.publisher import PublisherOptions
from services.kpi.engine import load_settings, period_bounds
from services.storage import rollups
from services.storage.modes import storage_mode
from services.storage.registry import load
from services.storage.urls import libpq_url
from simulators.city import City, build_manifest, small_city
from simulators.runner import PublisherSink, Simulation, run

log = logging.getLogger(__name__)

HISTORY_DAYS = 7
"""Whole local days before today: yesterday, this week and the last 7 days are complete."""
_DAY = 86400.0
# How long the watcher waits for the database to hold a part, and for it to make progress.
_LAND_TIMEOUT_S = 600.0
_STALL_S = 60.0

Span = tuple[float, float]


def history_start(now: datetime, timezone: str, days: int = HISTORY_DAYS) -> datetime:
    """The local midnight ``days`` whole days before today's (in ``timezone``), in UTC."""
    today, _ = period_bounds("day", now, timezone)
    start, _ = period_bounds("day", today - timedelta(days=days) + timedelta(hours=12), timezone)
    return start


def backfill_plan(now: float, today: float, begins: float) -> tuple[Span, list[Span]]:
    """Today's span ``[max(today, begins), now)`` and the older history down to ``begins`` in
    spans of at most a day, newest first (what a newcomer looks at first arrives first)."""
    first = max(today, begins)
    older: list[Span] = []
    hi = first
    while hi > begins:
        lo = max(begins, hi - _DAY)
        older.append((lo, hi))
        hi = lo
    return (first, now), older


def _installed_at(state_dir: Path, default: datetime) -> datetime:
    """When this city was installed: the first start's history start, remembered."""
    path = state_dir / "installed"
    with contextlib.suppress(OSError, ValueError):
        return datetime.fromisoformat(path.read_text().strip())
    path.write_text(default.isoformat() + "\n")
    return default


def city_gateways(seed: int = 0) -> list[str]:
    """The ids of the city's gateways: the broker's users before the city starts."""
    return [gateway["id"] for gateway in build_manifest(small_city(), seed=seed).gateways]


def start_city(
    stack: contextlib.ExitStack,
    database_url: str,
    mqtt_url: str,
    state_dir: Path,
    *,
    seed: int = 0,
    passwords: Mapping[str, str] | None = None,
    on_ready: Callable[[str], None] | None = None,
    city: City | None = None,
    history_days: int = HISTORY_DAYS,
) -> str:
    """Register the city, start it in threads (stopped by ``stack``); describe it.

    ``passwords``: each gateway's MQTT password, its id being the username.
    ``on_ready("today")`` and ``on_ready("history")`` are called (from a watcher thread) once
    the database holds each part of the backfill and the rollups include it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with psycopg.connect(libpq_url(database_url)) as conn:
        timezone = load_settings(conn).timezone
    begins = history_start(now, timezone, history_days)
    installed = min(_installed_at(state_dir, begins), begins)
    manifest = build_manifest(city or small_city(), seed=seed, installed_at=installed)
    with psycopg.connect(libpq_url(database_url)) as conn:
        load(conn, manifest.json())
        keys = [
            int(row[0])
            for row in conn.execute(
                "SELECT key FROM sensors WHERE id = ANY(%s)", ([s.id for s in manifest.sensors],)
            )
        ]
    broker = urlsplit(mqtt_url)
    sink = PublisherSink(
        state_dir,
        lambda gateway: PublisherOptions(
            gateway_id=gateway,
            host=broker.hostname or "127.0.0.1",
            port=broker.port or 1883,
            username=gateway if passwords is not None else None,
            password=passwords[gateway] if passwords is not None else None,
        ),
    )
    # Started here, before two threads put into the sink.
    for gateway in manifest.gateways:
        sink.publisher(str(gateway["id"]))
    simulation = Simulation(manifest, seed=seed)
    stop = threading.Event()
    today, _ = period_bounds("day", now, timezone)
    today_span, older = backfill_plan(now.timestamp(), today.timestamp(), begins.timestamp())
    landed = _Watcher(database_url, keys, on_ready or (lambda _part: None), stop)

    def live() -> None:
        # Today up to the moment the live run starts, then real time: no gap, no lag.
        stats = run(simulation, sink, *today_span, should_stop=stop.is_set)
        landed.expect("today", today_span, stats.records)
        live_from = time.time()
        run(simulation, sink, today_span[1], live_from, should_stop=stop.is_set)
        history.start()
        run(simulation, sink, live_from, None, speed=1.0, should_stop=stop.is_set)

    def backfill() -> None:
        records = sum(
            run(simulation, sink, *span, should_stop=stop.is_set).records for span in older
        )
        if older and not stop.is_set():
            landed.expect("history", (older[-1][0], older[0][1]), records)

    history = threading.Thread(target=backfill, name="city-history", daemon=True)
    threads = [threading.Thread(target=live, name="city", daemon=True), landed.thread]
    for thread in threads:
        thread.start()
    stack.callback(sink.close)
    for thread in (*threads, history):
        stack.callback(_join, thread)
    stack.callback(stop.set)
    return (
        f"{len(manifest.sensors)} sensors in {len(manifest.districts)} districts, "
        f"{len(manifest.gateways)} gateways; installed {installed:%Y-%m-%d %H:%M} UTC, "
        f"today backfilled first, then live while the {history_days} days before are backfilled"
    )


def _join(thread: threading.Thread) -> None:
    if thread.is_alive():  # the history thread may never have started
        thread.join(10)


class _Watcher:
    """Waits until the database holds what each part of the backfill sent, then refreshes the
    rollups (partition mode refreshes them only every minute otherwise) and reports the part."""

    def __init__(
        self,
        database_url: str,
        keys: list[int],
        on_ready: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        self.database_url = database_url
        self.keys = keys
        self.on_ready = on_ready
        self.stop = stop
        self.parts: queue.Queue[tuple[str, Span, int]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="city-watcher", daemon=True)

    def expect(self, part: str, span: Span, records: int) -> None:
        self.parts.put((part, span, records))

    def _run(self) -> None:
        for _ in ("today", "history"):
            while True:
                try:
                    part, span, records = self.parts.get(timeout=0.5)
                    break
                except queue.Empty:
                    if self.stop.is_set():
                        return
            try:
                self._land(part, span, records)
            except psycopg.Error as exc:
                log.warning("city backfill: could not follow %s (%s)", part, exc)
            if not self.stop.is_set():
                self.on_ready(part)

    def _land(self, part: str, span: Span, records: int) -> None:
        lo, hi = (datetime.fromtimestamp(t, UTC) for t in span)
        with psycopg.connect(libpq_url(self.database_url)) as conn:
            deadline = time.monotonic() + _LAND_TIMEOUT_S
            seen, progress_at = -1, time.monotonic()
            while not self.stop.is_set() and time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM readings "
                    "WHERE sensor_key = ANY(%s) AND time >= %s AND time < %s",
                    (self.keys, lo, hi),
                ).fetchone()
                conn.commit()
                count = int(row[0]) if row else 0
                if count >= records:
                    break
                if count > seen:
                    seen, progress_at = count, time.monotonic()
                elif time.monotonic() - progress_at > _STALL_S:
                    log.warning(
                        "city backfill: %s stalled at %d of %d readings", part, count, records
                    )
                    break
                self.stop.wait(0.5 if part == "today" else 2.0)
            rollups.refresh(conn, storage_mode(conn))
