"""A platform started for the browser tests, and Debian's Chromium driven by Playwright.

The platform is real: a migrated PostgreSQL database (partition mode), the session's MQTT
broker, an ingestion worker in a thread, the monitor's round run once, and the API in uvicorn.
A small city is registered (four districts, three with GeoJSON boundaries and one without) and
today's readings are written through the real write path, so the KPIs have values to rate.

Chromium runs headless with flags that keep it off the network (no background, component or
sync traffic, no QUIC). Without /usr/bin/chromium or the playwright package the tests are
skipped, saying so. Screenshots go to ``URBANPULSE_TEST_ARTIFACTS`` (default
build/browser-artifacts); with ``URBANPULSE_UPDATE_SCREENSHOTS=1`` they are also copied into
docs/screenshots/ for the README.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from psycopg.types.json import Jsonb

from services.api.app import create_app
from services.api.keys import create_key
from services.ingest.worker import IngestWorker, WorkerConfig
from services.kpi import baseline, engine
from services.kpi.alerts.defaults import install_defaults
from services.kpi.monitor import run_round
from services.settings import Settings
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url, with_database
from services.storage.writer import ReadingWriter
from tests.fixtures.broker import BrokerUnderTest
from tests.services.kpi.conftest import City

# URBANPULSE_TEST_CHROMIUM: another Chromium binary (Debian's by default).
CHROMIUM = Path(os.environ.get("URBANPULSE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"

# Four districts on a 2x2 grid around the centre; d4 has no boundary in the registry (the map
# draws the hull of its sensors instead).
CENTRE = (50.85, 4.35)
DISTRICTS = {
    "d1": ("Harbour", (-1, -1), True),
    "d2": ("Old Town", (-1, 1), True),
    "d3": ("University", (1, -1), True),
    "d4": ("Riverside", (1, 1), False),
}
STEP_S = 300.0
# kind -> ((quantity, typical value, spread), ...): what each district's sensors report today.
SEEDED: dict[str, tuple[tuple[str, float, float], ...]] = {
    "air_quality": (("pm25", 11.0, 6.0), ("pm10", 19.0, 8.0), ("no2", 24.0, 10.0)),
    "noise": (("laeq", 58.0, 6.0),),
    "waste_container": (("fill", 0.45, 0.3),),
    "traffic_counter": (("speed", 9.0, 3.0), ("count", 40.0, 20.0)),
    "electricity_meter": (("power", 1800.0, 900.0),),
    "water_inflow": (("flow", 0.04, 0.02),),
}
# The quantity each domain's live chart follows (services/api/console/console.js), by sensor.
CHARTED = {
    "water": ("water", "flow", "m3/s", 0.04),
    "energy": ("electricity", "power", "W", 1800.0),
    "waste": ("waste", "fill", "/", 0.5),
    "traffic": ("traffic", "speed", "m/s", 9.0),
    "environment": ("air", "pm25", "ug/m3", 12.0),
}


@dataclass
class Platform:
    url: str
    database_url: str
    keys: dict[str, str]
    alert_id: int
    sensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: Path = Path()

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(libpq_url(self.database_url), autocommit=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _square(lat: float, lon: float, half: float) -> dict[str, Any]:
    ring = [
        [lon - half * 1.5, lat - half],
        [lon + half * 1.5, lat - half * 0.9],
        [lon + half * 1.4, lat + half],
        [lon - half * 1.5, lat + half],
        [lon - half * 1.5, lat - half],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def _daily(level: float, spread: float) -> Callable[[datetime], float]:
    """A value with a daily swing around ``level``, never negative."""

    def value(moment: datetime) -> float:
        hour = moment.hour + moment.minute / 60
        return max(0.0, level + 0.4 * spread * math.sin(hour / 24 * 2 * math.pi))

    return value


def _seed(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, dict[str, Any]]:
    mode = storage_mode(conn)
    city = City(conn=conn, mode=mode, writer=ReadingWriter(conn, mode))
    rng = random.Random(13)
    now = datetime.now(UTC)
    today, _ = engine.period_bounds("day", now, engine.load_settings(conn).timezone)
    # Enough history for the sparklines of the last days, whole days and today so far.
    start = today - timedelta(days=3)
    sensors: dict[str, dict[str, Any]] = {}
    half = 0.009
    for district_id, (name, (dy, dx), bounded) in DISTRICTS.items():
        lat, lon = CENTRE[0] + dy * 2 * half, CENTRE[1] + dx * 3 * half
        city.district(district_id, name=name, population=20000 + 5000 * dx)
        if bounded:
            conn.execute(
                "UPDATE districts SET boundary = %s WHERE id = %s",
                (Jsonb(_square(lat, lon, half)), district_id),
            )
        for kind, quantities in SEEDED.items():
            sensor_id = f"{kind.split('_')[0]}-{district_id}-1"
            key = city.sensor(
                sensor_id,
                kind,
                district_id,
                interval_s=STEP_S,
                installed_at=start,
                latitude=lat + rng.uniform(-0.8, 0.8) * half,
                longitude=lon + rng.uniform(-1.2, 1.2) * half,
            )
            sensors[sensor_id] = {"kind": kind, "district": district_id, "key": key}
            for quantity, typical, spread in quantities:
                shape = _daily(typical + rng.uniform(-0.3, 0.3) * spread, spread)
                city.series(key, quantity, start, now, step_s=STEP_S, value=shape, refresh=False)
    city.refresh()
    # The gateways of three districts are heard from; Riverside's is not (shown offline).
    conn.execute(
        "UPDATE gateways SET online = (district_id <> 'd4'), "
        "last_seen = CASE WHEN district_id <> 'd4' THEN now() END"
    )
    conn.commit()
    return sensors


def _first_day(conn: psycopg.Connection[tuple[object, ...]]) -> object:
    row = conn.execute("SELECT min(installed_at) FROM sensors").fetchone()
    assert row is not None
    start = row[0]
    assert isinstance(start, datetime)
    zone = engine.load_settings(conn).timezone
    return engine.period_bounds("day", start + timedelta(hours=12), zone)[0].isoformat()


def alert(conn: psycopg.Connection[tuple[object, ...]], subject: str, message: str) -> int:
    """Raise an alert on ``subject`` (a sensor of Harbour) under the first rule."""
    rule = conn.execute("SELECT id FROM alert_rules ORDER BY id LIMIT 1").fetchone()
    assert rule is not None
    row = conn.execute(
        "INSERT INTO alerts (rule_id, subject_id, district_id, domain, severity, message, value) "
        "VALUES (%s, %s, 'd1', 'environment', 'warning', %s, 1.0) RETURNING id",
        (rule[0], subject, message),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(str(row[0]))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("URBANPULSE_TEST_ARTIFACTS", ROOT / "build" / "browser-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_screenshot(page: Any, artifacts: Path, name: str, **options: Any) -> Path:
    """Save a screenshot as an artifact (and into docs/screenshots/ when asked to)."""
    path = artifacts / name
    page.screenshot(path=str(path), **options)
    if os.environ.get("URBANPULSE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / name)
    return path


@pytest.fixture(scope="module")
def platform(
    postgres_server: str,
    _partitioned_template: str,
    mqtt_broker: BrokerUnderTest,
    artifacts: Path,
) -> Iterator[Platform]:
    name = f"urbanpulse_browser_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(postgres_server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_partitioned_template}"')
    database_url = with_database(postgres_server, name)
    stops: list[Any] = []
    try:
        with psycopg.connect(libpq_url(database_url)) as conn:
            sensors = _seed(conn)
            # The first whole day is the baseline the tiles report their change against.
            first = datetime.fromisoformat(str(_first_day(conn)))
            baseline.set_baseline(conn, first, first + timedelta(days=1), recorded_by="tests")
            install_defaults(conn)
            conn.commit()
            run_round(conn)
            alert_id = alert(conn, "air-d1-1", "PM2.5 above the WHO daily line at Harbour")
            keys = {
                role: create_key(conn, f"browser {role}", role)[1]
                for role in ("operator", "service")
            }
            conn.commit()
        worker = IngestWorker(
            WorkerConfig(
                database_url=database_url,
                mqtt_url=mqtt_broker.url,
                client_id=f"browser-{uuid.uuid4().hex[:8]}",
                group=f"b{uuid.uuid4().hex[:8]}",
                session_expiry_s=60,
                flush_ms=20,
                receipts=False,
            )
        )
        worker_stop, ready = threading.Event(), threading.Event()
        worker_thread = threading.Thread(
            target=worker.run, args=(worker_stop, ready.set), daemon=True
        )
        worker_thread.start()
        stops.append(lambda: (worker_stop.set(), worker_thread.join(10)))
        assert ready.wait(20), "the ingestion worker did not subscribe"
        settings = Settings(  # type: ignore[call-arg]
            database_url=database_url,
            mqtt_url=mqtt_broker.url,
            public_page=True,
            _env_file=None,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=_free_port(), log_level="warning"
            )
        )
        api_thread = threading.Thread(target=server.run, daemon=True)
        api_thread.start()
        stops.append(lambda: (setattr(server, "should_exit", True), api_thread.join(10)))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Platform(
            url=f"http://127.0.0.1:{port}",
            database_url=database_url,
            keys=keys,
            alert_id=alert_id,
            sensors=sensors,
            artifacts=artifacts,
        )
    finally:
        for stop in reversed(stops):
            stop()
        with psycopg.connect(libpq_url(postgres_server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium) "
            "or set URBANPULSE_TEST_CHROMIUM to run the browser tests"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@dataclass
class Watched:
    """A page with every console error and uncaught exception it produced (a CSP violation
    is a console error)."""

    page: Any
    errors: list[str]


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_(width: int = 1440, height: int = 900) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20000)
        watched = Watched(page, [])
        page.on(
            "console",
            lambda m: watched.errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: watched.errors.append(str(e)))
        return watched

    yield open_
    for context in contexts:
        context.close()
