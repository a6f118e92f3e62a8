"""The ingestion worker against a real broker and a real database: stored once, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from gateway import topics
from gateway.senml import Record, encode
from services.ingest.worker import IngestWorker, WorkerConfig, WorkerFailedError
from tests.fixtures.broker import BrokerUnderTest, MqttConnect, require

from .conftest import MakeCity

ROOT = Path(__file__).resolve().parents[3]
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def city(make_city: MakeCity) -> tuple[str, Conn]:
    """Gateways gw-a and gw-b; gw-a owns ten feeder meters."""
    return make_city(["gw-a", "gw-b"], {f"fdr-{i}": "gw-a" for i in range(10)})


@pytest.fixture(autouse=True)
def _durable_broker(mqtt_broker: BrokerUnderTest) -> None:
    # Measured: rumqttd (iotcore 0.4) panics when persistent shared-subscription members come
    # and go, and loses their messages; the worker's guarantee needs a Mosquitto-class broker.
    require(mqtt_broker, persistence=True)


def _group() -> str:
    # A shared subscription of the worker's own, as a worker of a scaled-out group has.
    return f"g{uuid.uuid4().hex[:8]}"


def _pack(sensor: str, start: float, count: int, value: float = 230.0) -> bytes:
    return encode(
        [
            Record(name=f"{sensor}/voltage", time=start + i, unit="V", value=value + i % 5)
            for i in range(count)
        ]
    )


def _wait_rows(conn: Conn, expected: int, table: str = "readings", timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        count = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index, call-overload]
        conn.commit()
        if count >= expected:
            time.sleep(0.3)  # anything beyond expected would show up now
            count = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index, call-overload]
            conn.commit()
            return count
        time.sleep(0.1)
    return count


def test_every_published_record_is_stored_once(
    city: tuple[str, Conn],
    start_worker: Callable[..., IngestWorker],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    url, conn = city
    worker = start_worker(url, group=_group())
    gateway = mqtt_connect(mqtt_broker)
    start = float(int(time.time()) - 3600)
    infos = [
        gateway.client.publish(
            topics.up_topic("gw-a"), _pack(f"fdr-{s}", start + p * 100, 50), qos=1
        )
        for p in range(10)
        for s in range(10)
    ]
    for info in infos:
        info.wait_for_publish(10)
    assert _wait_rows(conn, 5000) == 5000
    assert conn.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    # Published again (a gateway replaying its outbox): nothing doubles.
    infos = [
        gateway.client.publish(topics.up_topic("gw-a"), _pack(f"fdr-{s}", start, 50), qos=1)
        for s in range(10)
    ]
    for info in infos:
        info.wait_for_publish(10)
    deadline = time.monotonic() + 10
    while worker.stats.duplicates < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.stats.duplicates == 500
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (5000,)


def test_bad_input_is_quarantined_with_its_reason_and_the_rest_stored(
    city: tuple[str, Conn],
    start_worker: Callable[..., IngestWorker],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    url, conn = city
    start_worker(url, group=_group())
    gateway = mqtt_connect(mqtt_broker)
    now = float(int(time.time()))
    good = {"n": "voltage", "u": "V", "v": 231.0}
    messages = {
        "not json": (topics.up_topic("gw-a"), b"\x00garbage{"),
        "mixed pack": (
            topics.up_topic("gw-a"),
            json.dumps(
                [
                    {"bn": "fdr-1/", "bt": now, **good},  # 0 stored
                    {"n": "voltage", "u": "V", "v": 999.0, "t": 1},  # 1 out of range
                    {"n": "voltage", "u": "furlongs", "v": 1.0, "t": 2},  # 2 wrong unit
                    {"n": "voltage", "u": "V", "v": "231", "t": 3},  # 3 wrong JSON type
                    {"bn": "ghost-9/", "n": "voltage", "u": "V", "v": 1.0},  # 4 unknown sensor
                    {"bn": "fdr-2/", "n": "pm25", "u": "ug/m3", "v": 1.0},  # 5 not of its kind
                    {"bn": "fdr-3/", "n": "voltage", "u": "V", "v": 230.0, "t": 86400},  # 6 future
                    {"bn": "fdr-4/", "n": "voltage", "v": 229.0},  # 7 stored (no unit)
                ]
            ).encode(),
        ),
        "wrong gateway": (topics.up_topic("gw-b"), json.dumps([{"bn": "fdr-5/", **good}]).encode()),
    }
    for topic, payload in messages.values():
        gateway.client.publish(topic, payload, qos=1).wait_for_publish(10)
    assert _wait_rows(conn, 8, table="quarantine") == 8
    rows = conn.execute(
        "SELECT q.topic, q.gateway_id, q.sensor_id, q.record_index, q.reason, m.payload "
        "FROM quarantine q JOIN quarantine_messages m ON m.id = q.message_id ORDER BY q.id"
    ).fetchall()
    expected = {
        ("gw-a", None, None, "not_senml"),
        ("gw-a", "fdr-1", 1, "out_of_range"),
        ("gw-a", "fdr-1", 2, "wrong_unit"),
        ("gw-a", None, 3, "not_senml"),
        ("gw-a", "ghost-9", 4, "unknown_sensor"),
        ("gw-a", "fdr-2", 5, "unknown_quantity"),
        ("gw-a", "fdr-3", 6, "time_in_future"),
        ("gw-b", "fdr-5", 0, "wrong_gateway"),
    }
    assert {(r[1], r[2], r[3], r[4]) for r in rows} == expected
    # The raw bytes are kept as they arrived.
    assert any(bytes(r[5]) == b"\x00garbage{" for r in rows)  # type: ignore[arg-type]
    stored = conn.execute(
        "SELECT s.id, r.value FROM readings r JOIN sensors s ON s.key = r.sensor_key ORDER BY s.id"
    ).fetchall()
    assert stored == [("fdr-1", 231.0), ("fdr-4", 229.0)]


def test_gateway_status_updates_the_registry(
    city: tuple[str, Conn],
    start_worker: Callable[..., IngestWorker],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    url, conn = city
    start_worker(url, group=_group())
    gateway = mqtt_connect(mqtt_broker)
    gateway.client.publish(topics.status_topic("gw-a"), b"online", qos=1).wait_for_publish(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT online, last_seen IS NOT NULL FROM gateways WHERE id = 'gw-a'"
        ).fetchone()
        conn.commit()
        if row == (True, True):
            break
        time.sleep(0.05)
    assert row == (True, True)


def test_a_killed_worker_loses_and_doubles_nothing(
    city: tuple[str, Conn], mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, tmp_path: Path
) -> None:
    url, conn = city
    client_id, group = f"ingest-{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "URBANPULSE_DATABASE_URL": url, "URBANPULSE_MQTT_URL": mqtt_broker.url}
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "ingest",
        "--client-id",
        client_id,
        "--group",
        group,
        "--batch-records",
        "500",
        "--metrics-port",
        "0",
    ]

    def spawn() -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # ready once it logs that it ingests
            if b"ingesting" in log.read_bytes():
                return process
            time.sleep(0.05)
        process.kill()
        process.wait()
        raise AssertionError(f"worker did not start: {log.read_text()}")

    worker = spawn()
    gateway = mqtt_connect(mqtt_broker)
    start = float(int(time.time()) - 7200)
    total = 0
    for p in range(40):
        gateway.client.publish(
            topics.up_topic("gw-a"), _pack(f"fdr-{p % 10}", start + p * 100, 50), qos=1
        ).wait_for_publish(10)
        total += 50
        if p == 15:
            worker.send_signal(signal.SIGKILL)  # mid-stream, whatever it was doing
            worker.wait()
        if p == 25:
            worker = spawn()
    try:
        assert _wait_rows(conn, total, timeout=30) == total
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(10)


def test_unknown_sensors_can_be_registered_as_pending(
    city: tuple[str, Conn], mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    url, conn = city
    worker = IngestWorker(
        WorkerConfig(
            database_url=url,
            mqtt_url=mqtt_broker.url,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            group=f"g{uuid.uuid4().hex[:8]}",
            session_expiry_s=60,
            register_unknown=True,
        )
    )
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, ready.set), daemon=True)
    thread.start()
    try:
        assert ready.wait(15)
        time.sleep(0.2)
        gateway = mqtt_connect(mqtt_broker)
        payload = json.dumps([{"bn": "new-meter-7/", "n": "voltage", "u": "V", "v": 230}])
        gateway.client.publish(topics.up_topic("gw-a"), payload.encode(), qos=1).wait_for_publish(
            10
        )
        assert _wait_rows(conn, 1, table="quarantine") == 1
        row = conn.execute(
            "SELECT status, kind, gateway_id FROM sensors WHERE id = 'new-meter-7'"
        ).fetchone()
        assert row == ("pending", "unknown", "gw-a")
        assert conn.execute("SELECT reason FROM quarantine").fetchone() == ("unknown_sensor",)
    finally:
        stop.set()
        thread.join(15)


def test_a_message_the_database_refuses_is_quarantined_and_its_batch_stored(
    city: tuple[str, Conn],
    start_worker: Callable[..., IngestWorker],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    url, conn = city
    # A rule validation knows nothing of (say, added by a DBA): PostgreSQL refuses the batch.
    conn.execute("ALTER TABLE readings ADD CONSTRAINT no_123 CHECK (value <> 123.0)")
    conn.commit()
    start_worker(url, group=_group())
    gateway = mqtt_connect(mqtt_broker)
    now = float(int(time.time()) - 60)
    refused = _pack("fdr-1", now, 1, value=123.0)
    # Good messages before and after the refused one, published together (one batch).
    infos = [
        gateway.client.publish(topics.up_topic("gw-a"), payload, qos=1)
        for payload in (_pack("fdr-2", now, 5), refused, _pack("fdr-3", now, 5))
    ]
    for info in infos:
        info.wait_for_publish(10)
    assert _wait_rows(conn, 10) == 10
    assert _wait_rows(conn, 1, table="quarantine") == 1
    assert conn.execute(
        "SELECT q.reason, q.gateway_id, m.payload "
        "FROM quarantine q JOIN quarantine_messages m ON m.id = q.message_id"
    ).fetchone() == (
        "storage_error",
        "gw-a",
        refused,
    )
    # The worker is still there and storing.
    gateway.client.publish(topics.up_topic("gw-a"), _pack("fdr-4", now, 5), qos=1).wait_for_publish(
        10
    )
    assert _wait_rows(conn, 15) == 15


def test_a_commit_thread_that_fails_stops_the_worker_with_an_error(
    city: tuple[str, Conn], mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    url, conn = city
    # PostgreSQL refuses the message, and then its quarantine entry too: nothing the worker
    # can go on from. It must end with an error (review: the commit thread died, and the
    # worker said it stopped "while the database was away" and returned as if asked to).
    conn.execute("ALTER TABLE readings ADD CONSTRAINT no_123 CHECK (value <> 123.0)")
    conn.execute(
        "ALTER TABLE quarantine ADD CONSTRAINT no_storage CHECK (reason <> 'storage_error')"
    )
    conn.commit()
    worker = IngestWorker(
        WorkerConfig(
            database_url=url,
            mqtt_url=mqtt_broker.url,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            group=_group(),
            session_expiry_s=60,
        )
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(threading.Event(), ready.set)
        except BaseException as exc:
            failures.append(exc)

    ready = threading.Event()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(15)
    gateway = mqtt_connect(mqtt_broker)
    now = float(int(time.time()) - 60)
    gateway.client.publish(
        topics.up_topic("gw-a"), _pack("fdr-1", now, 1, value=123.0), qos=1
    ).wait_for_publish(10)
    thread.join(30)
    assert not thread.is_alive(), "the worker went on without its commit thread"
    [failure] = failures
    assert isinstance(failure, WorkerFailedError)
    assert isinstance(failure.__cause__, psycopg.errors.CheckViolation)
