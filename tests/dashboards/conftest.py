"""A healthy simulated city in a real database, once per storage mode for the module that asks.

The ``small`` city of ``simulators/city.py`` (4 districts, 200 sensors, 20 gateways) is
registered from its manifest; its sensor models write the last 26 hours of readings (nine days
for the DMA inflow meters, so the leak rule has its seven previous nights) through the
ingestion write path (``ReadingWriter``); the rollups are refreshed; a baseline is recorded; the
monitor's round computes the current KPI values and raises alerts, one of which an operator
acknowledges; gateways report their status, one of them offline; and the worker's quarantine
holds a malformed pack and an unknown sensor. The scenario gives the operators something to
look at, all in district d01: a leak on its first DMA, a 20-minute feeder outage, a road
incident.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway.kinds import QUANTITIES
from services.kpi import baseline, engine
from services.kpi.alerts import lifecycle
from services.kpi.alerts.defaults import install_defaults
from services.kpi.alerts.evaluate import evaluate
from services.storage import migrate, rollups
from services.storage import registry as registry_load
from services.storage.partitions import maintain
from services.storage.urls import libpq_url, with_database
from services.storage.writer import ReadingWriter
from simulators.city import build_manifest, small_city
from simulators.runner import Simulation
from simulators.scenario import Leak, Scenario, Window

HISTORY = timedelta(hours=26)
INFLOW_HISTORY = timedelta(days=9)
BATCH = 50_000


@dataclass(frozen=True)
class SeededCity:
    url: str
    mode: str
    now: datetime  # the simulated data ends here
    # Grafana's "now" for the panel tests: just after the seeding (its alert acknowledgement
    # included), fixed, so a slow run does not slide the ranges off the data.
    ready: datetime


def _scenario(now: float) -> Scenario:
    scenario = Scenario()
    scenario.leaks.append(Leak("d01-dma1", Window(now - 40 * 3600, now + 3600), 0.004))
    scenario.feeder_outages["d01-f1"] = [Window(now - 5 * 3600, now - 5 * 3600 + 1200)]
    scenario.road_incidents["tra-cnt-d01-0001"] = [(Window(now - 3 * 3600, now - 2 * 3600), 0.8)]
    return scenario


def seed(url: str, mode: str) -> datetime:
    manifest = build_manifest(small_city(), seed=3)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    end = int(now.timestamp())
    with psycopg.connect(libpq_url(url)) as conn:
        result = registry_load.load(conn, manifest.json())
        assert not result.errors, result.errors[:3]
        conn.commit()
        keys = {str(k): int(str(v)) for k, v in conn.execute("SELECT id, key FROM sensors")}
        sim = Simulation(manifest, _scenario(float(end)), seed=3)
        writer = ReadingWriter(conn, mode)
        rows: list[tuple[float, int, int, float]] = []
        for sensor in sim.sensors:
            history = INFLOW_HISTORY if sensor.spec.kind == "water_inflow" else HISTORY
            start = end - int(history.total_seconds())
            key = keys[sensor.spec.id]
            qkeys = [QUANTITIES[q].key for q in sensor.model.quantities]
            first = -(-start // sensor.interval) * sensor.interval
            for t in range(first, end, sensor.interval):
                for qkey, value in zip(qkeys, sensor.model.sample(float(t)), strict=True):
                    if value is not None:
                        rows.append((float(t), key, qkey, value))
            if len(rows) >= BATCH:
                writer.write(rows)
                conn.commit()
                rows = []
        writer.write(rows)
        conn.commit()
        rollups.refresh(conn, mode, now=now + timedelta(minutes=1))

        conn.execute("UPDATE gateways SET online = true, last_seen = now()")
        conn.execute(
            "UPDATE gateways SET online = false, last_seen = now() - interval '2 hours' "
            "WHERE id = 'gw-d04-traffic'"
        )
        for minutes, reason, sensor_id in (
            (50, "not_senml", None),
            (20, "unknown_sensor", "wat-dma-d09-0001"),
        ):
            conn.execute(
                "WITH message AS (INSERT INTO quarantine_messages (received_at, topic, bytes, "
                "payload) VALUES (now() - make_interval(mins => %(minutes)s), "
                "'ssc/v1/gw-d01-water/up', 1, '\\x7b'::bytea) RETURNING id, received_at, topic) "
                "INSERT INTO quarantine (received_at, topic, gateway_id, sensor_id, reason, "
                "detail, message_id) SELECT received_at, topic, 'gw-d01-water', %(sensor)s, "
                "%(reason)s, '', id FROM message",
                {"minutes": minutes, "sensor": sensor_id, "reason": reason},
            )
        conn.commit()

        baseline.set_baseline(conn, now - HISTORY, now - timedelta(hours=2))
        engine.refresh_current(conn)
        install_defaults(conn)
        conn.commit()
        evaluate(conn)
        conn.commit()
        first = conn.execute(
            "SELECT id FROM alerts WHERE state = 'raised' ORDER BY id LIMIT 1"
        ).fetchone()
        assert first is not None, "the simulated city raised no alert"
        lifecycle.acknowledge(conn, int(str(first[0])), "operator:test", "crew sent")
        conn.commit()
    return now


@pytest.fixture(
    scope="module",
    params=["partitioned", pytest.param("timescaledb", marks=pytest.mark.timescaledb)],
)
def seeded_city(request: pytest.FixtureRequest) -> Iterator[SeededCity]:
    """A database holding the simulated city, in each storage mode in turn."""
    mode: str = request.param
    name = f"urbanpulse_dash_{uuid.uuid4().hex[:12]}"
    if mode == "partitioned":
        server = request.getfixturevalue("postgres_server")
        template = request.getfixturevalue("_partitioned_template")
        create = f'CREATE DATABASE "{name}" TEMPLATE "{template}"'
    else:
        server = request.getfixturevalue("timescale_server")
        create = f'CREATE DATABASE "{name}"'
    with psycopg.connect(libpq_url(server), autocommit=True) as admin:
        admin.execute(create)
    url = with_database(server, name)
    try:
        if mode == "partitioned":
            maintain(url)
        else:
            migrate.upgrade(url, mode="timescaledb")
        now = seed(url, mode)
        yield SeededCity(url, mode, now, ready=datetime.now(UTC))
    finally:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(libpq_url(server), autocommit=True) as admin,
        ):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
