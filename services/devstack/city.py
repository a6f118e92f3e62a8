"""The simulated city of ``urbanpulse up``: registered, its last day backfilled, then live.

Readings are pure functions of (sensor, time), so backfilling the same day again after a restart
re-sends identical readings, which the idempotent write path absorbs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from gateway.publisher import PublisherOptions
from services.storage.registry import load
from services.storage.urls import libpq_url
from simulators.city import build_manifest, small_city
from simulators.runner import PublisherSink, Simulation, run

BACKFILL_S = 86400.0  # a day of history, so dashboards show shapes at once


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
) -> str:
    """Register the city, start it in a thread (stopped by ``stack``); describe it.
    ``passwords``: each gateway's MQTT password, its id being the username."""
    manifest = build_manifest(small_city(), seed=seed)
    with psycopg.connect(libpq_url(database_url)) as conn:
        load(conn, manifest.json())
    broker = urlsplit(mqtt_url)
    state_dir.mkdir(parents=True, exist_ok=True)
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

    def live() -> None:
        now = time.time()
        run(simulation, sink, now - BACKFILL_S, now, should_stop=stop.is_set)
        run(simulation, sink, now, None, speed=1.0, should_stop=stop.is_set)

    thread = threading.Thread(target=live, name="city", daemon=True)
    thread.start()
    stack.callback(sink.close)
    stack.callback(thread.join, 10)
    stack.callback(stop.set)
    return (
        f"{len(manifest.sensors)} sensors in {len(manifest.districts)} districts, "
        f"{len(manifest.gateways)} gateways; last 24 h backfilled, then live"
    )
