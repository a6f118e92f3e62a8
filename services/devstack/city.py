"""The simulated city of ``urbanpulse up``: registered, a week of history imported, and live.

The first screen must be true within a minute, so the work is split by what it needs:

- the present is published live over MQTT from the moment the city starts, as gateways do;
- everything before that moment (today from the city's local midnight first, then the 7 whole
  days before it, newest first) is written by processes of their own (one per core, two at
  most) through the history import (``history.py``), which refresh each day's rollups and
  report; ``on_ready`` hears ``"today"``, then ``"history"``, and ``urbanpulse up`` runs the
  monitor's first round on today as soon as today is in, and every period once the week is.

The live run starts at the very moment the history ends, so nothing is left out or sent twice;
should they ever overlap (a restart re-imports today, part of which the live run of the last
start stored), the idempotent write path keeps one copy and counts the other as a duplicate.

The sensors are registered as installed when their history begins (kept in ``<state>/installed``
across restarts), so a KPI of the month or the year is judged from then, not from a date long
before the first reading. Readings are pure functions of (sensor, time): the history process and
the live run generate them with the same model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from gateway.publisher import PublisherOptions
from services.ingest.validate import Policy
from services.kpi.engine import load_settings, period_bounds
from services.storage.registry import load
from services.storage.urls import libpq_url
from simulators.city import build_manifest, small_city
from simulators.runner import PublisherSink, Simulation, run

from .history import HISTORY_DAYS, Job, Span, backfill_plan, history_start

log = logging.getLogger(__name__)

# How long a stopping ``up`` waits for the history process after closing its stdin.
_HISTORY_STOP_S = 5.0


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


def history_shares(older: list[Span], processes: int | None = None) -> list[list[Span]]:
    """The older days dealt to the history processes, one per core (two at most: the live
    platform needs the rest), newest first in each. The first process also has today, so the
    second takes the newest day and one more when the days are odd."""
    count = max(1, min(2, processes or os.cpu_count() or 1, len(older)))
    if count == 1:
        return [older]
    return [older[1::2], older[0::2]]


def start_city(
    stack: contextlib.ExitStack,
    database_url: str,
    mqtt_url: str,
    state_dir: Path,
    *,
    seed: int = 0,
    passwords: Mapping[str, str] | None = None,
    policy: Policy | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> str:
    """Register the city, start its history processes and its live run (stopped by ``stack``);
    describe it.

    ``passwords``: each gateway's MQTT password, its id being the username. ``policy``: the
    validation the history import applies (the ingestion worker's). ``on_ready("today")`` and
    ``on_ready("history")`` are called (from a reader thread) once each part is stored and its
    rollups refreshed (the history: by every process)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with psycopg.connect(libpq_url(database_url)) as conn:
        timezone = load_settings(conn).timezone
        begins = history_start(now, timezone)
        installed = min(_installed_at(state_dir, begins), begins)
        manifest = build_manifest(small_city(), seed=seed, installed_at=installed)
        load(conn, manifest.json())
    today, _ = period_bounds("day", now, timezone)
    # The seam: the history is every tick before it, the live run every tick from it on.
    seam = now.timestamp()
    today_span, older = backfill_plan(seam, today.timestamp(), begins.timestamp())
    rules = policy or Policy()
    history = _History(
        [
            Job(
                database_url=database_url,
                seed=seed,
                installed_at=installed.isoformat(),
                today=today_span if share == 0 else (seam, seam),
                older=days,
                max_future_s=rules.max_future_s,
                max_age_s=rules.max_age_s,
            )
            for share, days in enumerate(history_shares(older))
        ],
        on_ready or (lambda _part: None),
    )
    # Registered at once: should anything below raise, the history processes still stop.
    stack.callback(history.stop)
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
    simulation = Simulation(manifest, seed=seed)
    stop = threading.Event()
    live = threading.Thread(
        target=run,
        args=(simulation, sink, seam, None),
        kwargs={"speed": 1.0, "should_stop": stop.is_set},
        name="city",
        daemon=True,
    )
    live.start()
    # Undone in reverse: stop and join the live run, close the sink, then stop the history.
    stack.callback(sink.close)
    stack.callback(live.join, 10)
    stack.callback(stop.set)
    return (
        f"{len(manifest.sensors)} sensors in {len(manifest.districts)} districts, "
        f"{len(manifest.gateways)} gateways; installed {installed:%Y-%m-%d %H:%M} UTC; live "
        f"over MQTT, while today and the {HISTORY_DAYS} days before are imported beside it"
    )


class _History:
    """The history processes (``history.py``), one per job, and the threads that read their
    reports: ``today`` is the first job's, ``history`` is told once every job has said it."""

    def __init__(self, jobs: list[Job], on_ready: Callable[[str], None]) -> None:
        self.on_ready = on_ready
        self.lock = threading.Lock()
        self.histories_left = len(jobs)
        self.processes: list[subprocess.Popen[str]] = []
        self.readers: list[threading.Thread] = []
        for number, job in enumerate(jobs):
            # Its stderr is ours: a failure is told on the terminal of ``up``.
            process = subprocess.Popen(
                [sys.executable, "-m", "services.devstack.history"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert process.stdin is not None
            process.stdin.write(job.json() + "\n")
            process.stdin.flush()
            reader = threading.Thread(
                target=self._read, args=(process, number == 0), name="city-history", daemon=True
            )
            reader.start()
            self.processes.append(process)
            self.readers.append(reader)

    def _read(self, process: subprocess.Popen[str], tells_today: bool) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                continue
            log.info("city history: %s", report)
            part = str(report["part"])
            if part == "today" and tells_today:
                self.on_ready(part)
            elif part == "history":
                with self.lock:
                    self.histories_left -= 1
                    last = self.histories_left == 0
                if last:
                    self.on_ready(part)
        code = process.wait()
        if code not in (0, -9):  # -9: killed by ``stop``
            log.warning(
                "city history: a process ended with %s before its days were in; the monitor "
                "judges the day only until it widens on its own",
                code,
            )

    def stop(self) -> None:
        """Close their stdin (they exit on that), wait a little, then kill them."""
        for process in self.processes:
            assert process.stdin is not None
            with contextlib.suppress(OSError):
                process.stdin.close()
        deadline = time.monotonic() + _HISTORY_STOP_S
        for process, reader in zip(self.processes, self.readers, strict=True):
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            reader.join(_HISTORY_STOP_S)
            if process.stdout is not None:
                process.stdout.close()
