"""The simulated city of ``urbanpulse up``: registered, a week of history backfilled, and live.

The first screen must be true within a minute, so the order matters:

1. today (from the city's local midnight) is backfilled first, as fast as possible;
2. the live run starts at once, and the older days follow in the background, newest first;
3. a watcher waits until the platform's receipts say each part is stored, refreshes the rollups
   and tells ``on_ready`` ("today", then "history"): ``urbanpulse up`` runs the monitor's first
   round on today as soon as today is in, and every period once the week is.

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

from gateway.outbox import Outbox, OutboxClosedError
from gateway.publisher import PublisherOptions
from services.kpi.engine import load_settings, period_bounds
from services.storage import rollups
from services.storage.modes import storage_mode
from services.storage.registry import load
from services.storage.urls import libpq_url
from simulators.city import build_manifest, small_city
from simulators.runner import PublisherSink, Simulation, run

log = logging.getLogger(__name__)

HISTORY_DAYS = 7
"""Whole local days before today: yesterday, this week and the last 7 days are complete."""
_DAY = 86400.0
# How long the watcher waits for a part's receipts: far past what a small city's week takes,
# only so that a platform that never stores them (a broken worker) still gets its rollups.
_LAND_TIMEOUT_S = 1200.0

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
) -> str:
    """Register the city, start it in threads (stopped by ``stack``); describe it.

    ``passwords``: each gateway's MQTT password, its id being the username.
    ``on_ready("today")`` and ``on_ready("history")`` are called (from a watcher thread) once
    the platform has stored each part of the backfill and the rollups include it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with psycopg.connect(libpq_url(database_url)) as conn:
        timezone = load_settings(conn).timezone
        begins = history_start(now, timezone)
        installed = min(_installed_at(state_dir, begins), begins)
        manifest = build_manifest(small_city(), seed=seed, installed_at=installed)
        load(conn, manifest.json())
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
    outboxes = {
        str(gateway["id"]): sink.publisher(str(gateway["id"])).outbox
        for gateway in manifest.gateways
    }
    simulation = Simulation(manifest, seed=seed)
    stop, live_started = threading.Event(), threading.Event()
    today, _ = period_bounds("day", now, timezone)
    today_span, older = backfill_plan(now.timestamp(), today.timestamp(), begins.timestamp())
    landed = _Watcher(database_url, outboxes, on_ready or (lambda _part: None), stop)

    def live() -> None:
        # Today up to the moment the live run starts, then real time: no gap, no lag.
        run(simulation, sink, *today_span, should_stop=stop.is_set)
        if stop.is_set():
            return
        landed.expect("today")
        live_from = time.time()
        run(simulation, sink, today_span[1], live_from, should_stop=stop.is_set)
        live_started.set()
        run(simulation, sink, live_from, None, speed=1.0, should_stop=stop.is_set)

    def backfill() -> None:
        # After today and the catch-up to the live run: what a newcomer looks at comes first.
        while not live_started.wait(0.5):
            if stop.is_set():
                return
        for span in older:
            run(simulation, sink, *span, should_stop=stop.is_set)
        if not stop.is_set():
            landed.expect("history")

    threads = [
        threading.Thread(target=live, name="city", daemon=True),
        threading.Thread(target=backfill, name="city-history", daemon=True),
        landed.thread,
    ]
    for thread in threads:
        thread.start()
    # Undone in reverse: stop, join every thread that puts into the sink, then close it.
    stack.callback(sink.close)
    for thread in reversed(threads):
        stack.callback(thread.join, 10)
    stack.callback(stop.set)
    return (
        f"{len(manifest.sensors)} sensors in {len(manifest.districts)} districts, "
        f"{len(manifest.gateways)} gateways; installed {installed:%Y-%m-%d %H:%M} UTC, "
        f"today backfilled first, then live while the {HISTORY_DAYS} days before are backfilled"
    )


class _Watcher:
    """Waits until the platform has stored what each part of the backfill put into the
    gateways' outboxes, then refreshes the rollups (partition mode refreshes them only every
    minute otherwise) and reports the part.

    Stored is what the gateways' receipts say: a pack leaves its outbox only on its receipt,
    readings ingestion rejected included (they are in quarantine, not missing). So a part is in
    once every outbox's first waiting seq is past its last seq when the part had been put."""

    def __init__(
        self,
        database_url: str,
        outboxes: Mapping[str, Outbox],
        on_ready: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        self.database_url = database_url
        self.outboxes = outboxes
        self.on_ready = on_ready
        self.stop = stop
        self.parts: queue.Queue[tuple[str, dict[str, int]]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="city-watcher", daemon=True)

    def expect(self, part: str) -> None:
        """``part`` has been put: every pack of it is at or below each outbox's last seq."""
        self.parts.put((part, {gateway: o.last_seq() for gateway, o in self.outboxes.items()}))

    def _run(self) -> None:
        for _ in ("today", "history"):
            while True:
                try:
                    part, marks = self.parts.get(timeout=0.5)
                    break
                except queue.Empty:
                    if self.stop.is_set():
                        return
            if not self._land(part, marks):
                return
            self.on_ready(part)

    def _land(self, part: str, marks: dict[str, int]) -> bool:
        """Wait for ``part``, then refresh the rollups; False when stopped meanwhile."""
        started = time.monotonic()
        waiting = dict(marks)
        while waiting:
            try:
                waiting = {g: m for g, m in waiting.items() if self.outboxes[g].first_seq() <= m}
            except OutboxClosedError:
                return False
            if not waiting:
                break
            if time.monotonic() - started > _LAND_TIMEOUT_S:
                log.warning(
                    "city backfill: %s not all stored after %.0f s (gateways still waiting for "
                    "receipts: %s); going on with what is",
                    part,
                    _LAND_TIMEOUT_S,
                    ", ".join(sorted(waiting)),
                )
                break
            if self.stop.wait(0.2):
                return False
        # Not once stopping: a full refresh would race the database's shutdown.
        if self.stop.is_set():
            return False
        try:
            with psycopg.connect(libpq_url(self.database_url)) as conn:
                rollups.refresh(conn, storage_mode(conn))
        except psycopg.Error as exc:
            log.warning("city backfill: could not refresh the rollups after %s (%s)", part, exc)
        return not self.stop.is_set()
