"""Nothing lost, nothing doubled: the database going away, the broker restarting, two workers
sharing one subscription. Counts at both ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from gateway import topics
from gateway.senml import Record, encode
from services.devstack.postgres import EmbeddedPostgres, free_port
from tests.fixtures.broker import BrokerUnderTest, MqttConnect, require

from .conftest import StartWorker

ROOT = Path(__file__).resolve().parents[3]


def _register(url: str, sensors: int = 10) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO gateways (id) VALUES ('gw-a')")
        for i in range(sensors):
            conn.execute(
                "INSERT INTO sensors (id, kind, domain, gateway_id) "
                "VALUES (%s, 'feeder_meter', 'energy', 'gw-a')",
                (f"fdr-{i}",),
            )


def _pack(sensor: int, start: float, count: int = 50) -> bytes:
    return encode(
        [
            Record(name=f"fdr-{sensor}/voltage", time=start + i, unit="V", value=230.0)
            for i in range(count)
        ]
    )


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]


def _wait_for(url: str, expected: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _count(url) >= expected:
                break
        except psycopg.OperationalError:
            pass
        time.sleep(0.1)
    time.sleep(0.5)  # anything beyond what was expected would show up now
    return _count(url)


def _publish(mqtt_connect: MqttConnect, broker: BrokerUnderTest, packs: list[bytes]) -> None:
    publisher = mqtt_connect(broker)
    infos = [publisher.client.publish(topics.up_topic("gw-a"), p, qos=1) for p in packs]
    for info in infos:
        info.wait_for_publish(15)
    publisher.client.disconnect()


def test_a_database_outage_loses_nothing(
    own_postgres: EmbeddedPostgres,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    start_worker: StartWorker,
) -> None:
    require(mqtt_broker, persistence=True)
    url = own_postgres.url
    _register(url)
    worker = start_worker(url, group=f"g{uuid.uuid4().hex[:8]}", session_expiry_s=300, settle_s=0.3)
    start = float(int(time.time()) - 3600)
    _publish(mqtt_connect, mqtt_broker, [_pack(s, start) for s in range(10)])
    assert _wait_for(url, 500) == 500

    own_postgres.stop()  # the database goes away; the gateways keep publishing
    _publish(
        mqtt_connect,
        mqtt_broker,
        [_pack(s, start + 100 * k) for k in range(1, 5) for s in range(10)],
    )
    time.sleep(1.5)
    assert worker.stats.database_errors > 0
    own_postgres.start()  # same data, same port
    assert _wait_for(url, 2500) == 2500
    assert worker.stats.duplicates == 0


@pytest.mark.parametrize("group", [None, "ingest"], ids=["plain", "shared"])
def test_a_broker_restart_mid_stream_loses_nothing(
    group: str | None,
    own_broker: BrokerUnderTest,
    make_database: Callable[[str], str],
    mqtt_connect: MqttConnect,
    start_worker: StartWorker,
) -> None:
    require(
        own_broker,
        persistence=True,
        restartable=True,
        shared_subscriptions_persist=group is not None,
    )
    url = make_database("partitioned")
    _register(url)
    start_worker(
        url,
        broker=own_broker,
        group=group,
        client_id="ingest-restart",
        session_expiry_s=300,
        settle_s=0.3,
    )
    start = float(int(time.time()) - 3600)
    # Acknowledged by the broker, not yet (all) stored: the restart must keep them.
    _publish(
        mqtt_connect, own_broker, [_pack(s, start + 100 * k) for k in range(8) for s in range(10)]
    )
    assert own_broker.handle is not None
    own_broker.handle.restart()
    # Published before the worker is back: its persistent session must catch them.
    _publish(
        mqtt_connect,
        own_broker,
        [_pack(s, start + 100 * k) for k in range(8, 12) for s in range(10)],
    )
    assert _wait_for(url, 6000) == 6000


def test_two_workers_split_a_stream_with_no_loss_and_no_duplicate(
    make_database: Callable[[str], str],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    start_worker: StartWorker,
) -> None:
    url = make_database("partitioned")
    _register(url)
    group = f"g{uuid.uuid4().hex[:8]}"
    workers = [start_worker(url, group=group, session_expiry_s=300, settle_s=0.3) for _ in range(2)]
    start = float(int(time.time()) - 3600)
    _publish(
        mqtt_connect, mqtt_broker, [_pack(s, start + 100 * k) for k in range(6) for s in range(10)]
    )
    assert _wait_for(url, 3000) == 3000
    # Readings only: retained status messages of other tests' gateways arrive too, by design.
    up = [
        w.metrics.registry.get_sample_value("urbanpulse_ingest_messages_total", {"channel": "up"})
        or 0
        for w in workers
    ]
    assert all(count > 0 for count in up)
    assert sum(up) == 60  # each message to exactly one worker
    assert sum(w.stats.duplicates for w in workers) == 0
    stored = sum(
        w.metrics.registry.get_sample_value("urbanpulse_ingest_records_stored_total") or 0
        for w in workers
    )
    assert stored == 3000


def test_nothing_is_acknowledged_before_its_commit(
    make_database: Callable[[str], str], own_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    """Hold the worker's commit with a lock, let it take the messages, kill it: a worker that
    acknowledged on receipt would lose them; ours gets them again after a restart."""
    require(own_broker, persistence=True)
    url = make_database("partitioned")
    _register(url)
    port = free_port()
    env = {**os.environ, "URBANPULSE_DATABASE_URL": url, "URBANPULSE_MQTT_URL": own_broker.url}
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "ingest",
        "--client-id",
        "ingest-held",
        "--metrics-port",
        str(port),
    ]

    def taken() -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as page:
                text = page.read().decode()
        except OSError:
            return -1
        for line in text.splitlines():
            if line.startswith('urbanpulse_ingest_messages_total{channel="up"}'):
                return float(line.split()[-1])
        return 0

    worker = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while taken() < 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # subscribed
        with psycopg.connect(url) as lock:
            lock.execute("LOCK TABLE readings IN EXCLUSIVE MODE")  # writes wait, reads don't
            start = float(int(time.time()) - 600)
            _publish(mqtt_connect, own_broker, [_pack(s, start) for s in range(10)])
            while taken() < 10 and time.monotonic() < deadline + 10:
                time.sleep(0.05)
            assert taken() == 10  # the worker has them all, and cannot commit
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            lock.rollback()
        assert _count(url) == 0
        worker = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert _wait_for(url, 500) == 500
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(15)
