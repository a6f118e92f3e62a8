"""The simulated city of ``urbanpulse up``: registered, a week of history imported, and live.

The first screen must be true within a minute, so the work is split by what it needs:

- the present is published live over MQTT from the moment the city starts, as gateways do;
- everything before that moment (today from the city's local midnight first, then the 7 whole
  days before it, newest first) is written by a process of its own through the history import
  (``history.py``), which refreshes each part's rollups and reports it; ``on_ready`` hears
  ``"today"``, then ``"history"``, and ``urbanpulse up`` runs the monitor's first round on
  today as soon as today is in, and every period once the week is.

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
import subprocess
import sys
import threading
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

from .history import HISTORY_DAYS, Job, backfill_plan, history_start

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
    """Register the city, start its history process and its live run (stopped by ``stack``);
    describe it.

    ``passwords``: each gateway's MQTT password, its id being the username. ``policy``: the
    validation the history import applies (the ingestion worker's). ``on_ready("today")`` and
    ``on_ready("history")`` are called (from a reader thread) once each part is stored and its
    rollups refreshed."""
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
        Job(
            database_url=database_url,
            seed=seed,
            installed_at=installed.isoformat(),
            today=today_span,
            older=older,
            max_future_s=rules.max_future_s,
            max_age_s=rules.max_age_s,
        ),
        on_ready or (lambda _part: None),
    )
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
    # Undone in reverse: stop the history, stop and join the live run, then close the sink.
    stack.callback(sink.close)
    stack.callback(live.join, 10)
    stack.callback(stop.set)
    stack.callback(history.stop)
    return (
        f"{len(manifest.sensors)} sensors in {len(manifest.districts)} districts, "
        f"{len(manifest.gateways)} gateways; installed {installed:%Y-%m-%d %H:%M} UTC; live "
        f"over MQTT, while today and the {HISTORY_DAYS} days before are imported beside it"
    )


class _History:
    """The history process (``history.py``) and the thread that reads its reports."""

    def __init__(self, job: Job, on_ready: Callable[[str], None]) -> None:
        self.on_ready = on_ready
        # Its stderr is ours: a failure is told on the terminal of ``up``.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.devstack.history"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(job.json() + "\n")
        self.process.stdin.flush()
        self.reader = threading.Thread(target=self._read, name="city-history", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                continue
            log.info("city history: %s", report)
            self.on_ready(str(report["part"]))
        code = self.process.wait()
        if code not in (0, -9):  # -9: killed by ``stop``
            log.warning(
                "city history: the process ended with %s before the week was in; the monitor "
                "judges the day only until it widens on its own",
                code,
            )

    def stop(self) -> None:
        """Close its stdin (it exits on that), wait a little, then kill it."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(_HISTORY_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(_HISTORY_STOP_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
