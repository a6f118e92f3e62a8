"""The pack ledger and receipts (issue 15) against a real broker and a real database.

Numbered packs are published here with paho and the same user properties a gateway sets
(``gateway.receipts``), or by a real :class:`Publisher`; both ends are counted in the database.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import topics
from gateway.config import GatewaySettings
from gateway.outbox import Outbox
from gateway.publisher import Publisher, PublisherOptions
from gateway.receipts import PackId
from gateway.senml import Record, encode
from services.devstack.broker import Mosquitto
from services.ingest.cli.ingest import worker_config
from services.settings import load_settings
from services.storage import ledger
from tests.fixtures.broker import BrokerUnderTest, MqttConnect, Subscriber, require

from .conftest import MakeCity, Workers

Conn = psycopg.Connection[tuple[object, ...]]
T0 = float(int(time.time()) - 3600)  # recent: older readings are past retention


@pytest.fixture
def city(make_city: MakeCity, gateway_id: str) -> tuple[str, Conn, str]:
    """This test's gateway with 4 meters."""
    return (
        *make_city([gateway_id], {f"{gateway_id}-m{i}": gateway_id for i in range(4)}),
        gateway_id,
    )


def _pack(gateway_id: str, start: int, count: int, sensor: int = 0) -> bytes:
    return encode(
        Record(
            name=f"{gateway_id}-m{sensor}/voltage",
            time=T0 + start + i,
            unit="V",
            value=230.0 + (start + i) % 10,
        )
        for i in range(count)
    )


def _publish(client: mqtt.Client, gateway_id: str, payload: bytes, pack: PackId | None) -> None:
    properties = None
    if pack is not None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = pack.properties()
    client.publish(
        topics.up_topic(gateway_id), payload, qos=1, properties=properties
    ).wait_for_publish(10)


def _count(conn: Conn, query: str = "SELECT count(*) FROM readings") -> int:
    value = conn.execute(query).fetchone()[0]  # type: ignore[index]
    conn.commit()
    return int(value)  # type: ignore[arg-type]


def _receipts(down: Subscriber, count: int, timeout: float = 15) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in down.wait_for(count, timeout)]


def test_a_redelivered_pack_writes_nothing_and_is_receipted_again(
    city: tuple[str, Conn, str],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    workers: Workers,
) -> None:
    url, conn, gateway_id = city
    worker = workers.start(url)
    down = mqtt_connect(mqtt_broker, subscribe=topics.down_topic(gateway_id))
    sender = mqtt_connect(mqtt_broker).client
    identity = PackId("stream-a", 7, 7)
    payload = _pack(gateway_id, 0, 5)

    _publish(sender, gateway_id, payload, identity)
    assert _receipts(down, 1) == [{"type": "receipt", "stream": "stream-a", "ranges": [[7, 7]]}]
    assert _count(conn) == 5
    # Remove what the pack stored: had the copy below been written, the rows would come back.
    conn.execute("DELETE FROM readings")
    conn.commit()

    _publish(sender, gateway_id, payload, identity)
    assert _receipts(down, 2)[1] == {"type": "receipt", "stream": "stream-a", "ranges": [[7, 7]]}
    assert _count(conn) == 0
    assert worker.stats.packs_replayed == 1
    assert _count(conn, "SELECT count(*) FROM pack_ledger") == 1

    # The control: the same bytes unnumbered (a third-party device) are written as today.
    _publish(sender, gateway_id, payload, None)
    deadline = time.monotonic() + 15
    while _count(conn) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _count(conn) == 5
    time.sleep(0.3)
    assert len(down.messages) == 2  # an unnumbered pack gets no receipt


def test_two_packs_carrying_the_same_reading_store_it_once(
    city: tuple[str, Conn, str],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    workers: Workers,
) -> None:
    url, conn, gateway_id = city
    worker = workers.start(url)
    down = mqtt_connect(mqtt_broker, subscribe=topics.down_topic(gateway_id))
    sender = mqtt_connect(mqtt_broker).client
    _publish(sender, gateway_id, _pack(gateway_id, 0, 6), PackId("s", 1, 1))
    _publish(sender, gateway_id, _pack(gateway_id, 3, 6), PackId("s", 2, 1))  # 3 shared
    seqs: set[int] = set()
    deadline = time.monotonic() + 15
    while seqs != {1, 2} and time.monotonic() < deadline:
        for receipt in _receipts(down, 1):
            for lo, hi in receipt["ranges"]:  # type: ignore[attr-defined]
                seqs.update(range(lo, hi + 1))
        time.sleep(0.05)
    assert seqs == {1, 2}
    assert _count(conn) == 9
    assert (
        _count(conn, "SELECT count(*) FROM (SELECT DISTINCT sensor_key, time FROM readings) d") == 9
    )
    assert worker.stats.duplicates == 3
    assert worker.stats.packs_replayed == 0


def test_the_ledger_is_pruned_below_each_streams_oldest_pack_and_by_age(
    make_database: Callable[[str], str],
) -> None:
    with psycopg.connect(make_database("partitioned")) as conn:
        ledger.claim(conn, [("gw-a", "s1", seq, 1) for seq in range(1, 101)])
        ledger.claim(conn, [("gw-a", "s1", 101, 90)])  # the gateway holds nothing below 90
        ledger.claim(conn, [("gw-b", "s9", seq, 1) for seq in range(1, 11)])
        conn.execute(
            "UPDATE pack_ledger SET stored_at = now() - interval '2 days' WHERE stream = 's9'"
        )
        assert ledger.claim(conn, [("gw-a", "s1", 5, 1), ("gw-a", "s1", 102, 90)]) == {
            ("gw-a", "s1", 102)
        }
        conn.commit()
        assert _count(conn, "SELECT count(*) FROM pack_ledger") == 112
        pruned = ledger.prune(conn, timedelta(days=1))
        conn.commit()
        assert pruned == 89 + 10
        rows = conn.execute(
            "SELECT stream, min(seq), max(seq), count(*) FROM pack_ledger GROUP BY stream"
        ).fetchall()
        assert rows == [("s1", 90, 102, 13)]
        assert ledger.prune(conn, timedelta(days=1)) == 0  # bounded: nothing left to drop


def _publisher(
    broker: BrokerUnderTest, gateway_id: str, path: Path, **overrides: object
) -> Publisher:
    settings: dict[str, object] = {
        "gateway_id": gateway_id,
        "host": broker.host,
        "port": broker.port,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "goodbye_timeout": 2.0,
    }
    settings.update(overrides)
    publisher = Publisher(Outbox(path), PublisherOptions(**settings))  # type: ignore[arg-type]
    publisher.start()
    return publisher


def test_a_gateway_keeps_packs_until_their_receipt(
    tmp_path: Path,
    city: tuple[str, Conn, str],
    mqtt_broker: BrokerUnderTest,
    workers: Workers,
) -> None:
    url, conn, gateway_id = city
    workers.start(url)
    publisher = _publisher(mqtt_broker, gateway_id, tmp_path / "outbox.sqlite")
    try:
        for n in range(10):
            publisher.put(_pack(gateway_id, 10 * n, 10, sensor=n % 4))
        assert publisher.wait_until(lambda h: h.outbox_depth == 0, 20), publisher.health()
        health = publisher.health()
        assert health.receipt_mode == "receipts"
        assert health.receipted == 10
        assert health.receipt_lag_s is not None
        assert health.resent == 0
        assert _count(conn) == 100
        assert _count(conn, "SELECT count(*) FROM pack_ledger") == 10
    finally:
        publisher.stop()
        publisher.outbox.close()


def test_a_pack_acknowledged_but_never_stored_is_resent_on_the_receipt_timeout(
    tmp_path: Path,
    city: tuple[str, Conn, str],
    mqtt_broker: BrokerUnderTest,
    workers: Workers,
) -> None:
    """No subscriber when the packs arrive: the broker acknowledges and forgets them."""
    url, conn, gateway_id = city
    publisher = _publisher(mqtt_broker, gateway_id, tmp_path / "outbox.sqlite", receipt_timeout=1.5)
    try:
        for n in range(4):
            publisher.put(_pack(gateway_id, 10 * n, 10, sensor=n))
        assert publisher.wait_until(lambda h: h.acknowledged >= 4, 10)
        health = publisher.health()
        assert (health.outbox_depth, health.receipt_mode) == (4, "waiting")
        workers.start(url)
        assert publisher.wait_until(lambda h: h.outbox_depth == 0, 20), publisher.health()
        health = publisher.health()
        assert health.resent >= 4
        assert health.connects == 1  # the timeout resent them, not a reconnect
        time.sleep(0.5)
        assert _count(conn) == 40
        assert _count(conn, "SELECT count(*) FROM pack_ledger") == 4
    finally:
        publisher.stop()
        publisher.outbox.close()


def test_packs_acknowledged_by_a_broker_killed_before_its_save_are_stored_once(
    tmp_path: Path,
    city: tuple[str, Conn, str],
    own_broker: BrokerUnderTest,
    workers: Workers,
) -> None:
    """Mosquitto queued the packs for the (stopped) worker's session and acknowledged them,
    then was SIGKILLed before its autosave: the queue is gone; the outbox still has them."""
    require(own_broker, persistence=True, restartable=True)
    assert isinstance(own_broker.handle, Mosquitto)
    url, conn, gateway_id = city
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    first = workers.start(url, broker=own_broker, client_id=client_id)
    workers.stop(first)  # its persistent session stays at the broker, queueing for it
    time.sleep(1.0)
    publisher = _publisher(own_broker, gateway_id, tmp_path / "outbox.sqlite")
    try:
        for n in range(4):
            publisher.put(_pack(gateway_id, 10 * n, 10, sensor=n))
        assert publisher.wait_until(lambda h: h.acknowledged >= 4, 10)
        own_broker.handle.stop(signal.SIGKILL)
        own_broker.handle.start()
        workers.start(url, broker=own_broker, client_id=client_id)
        assert publisher.wait_until(lambda h: h.outbox_depth == 0, 30), publisher.health()
        time.sleep(0.5)
        assert _count(conn) == 40
        assert publisher.health().connects >= 2
    finally:
        publisher.stop()
        publisher.outbox.close()


def test_the_receipt_settings_reach_the_worker_and_the_gateway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URBANPULSE_PACK_LEDGER_RETENTION", "PT6H")
    monkeypatch.setenv("URBANPULSE_RECEIPTS", "false")
    monkeypatch.setenv("URBANPULSE_DIRECT_COPY", "false")
    config = worker_config(
        load_settings(), database_url="", mqtt_url="", client_id="", username=None, password=None
    )
    assert (config.ledger_retention_s, config.receipts, config.direct_copy) == (
        6 * 3600.0,
        False,
        False,
    )
    monkeypatch.setenv("URBANPULSE_GATEWAY_RECEIPT_TIMEOUT_S", "5")
    monkeypatch.setenv("URBANPULSE_GATEWAY_RECEIPT_FALLBACK_S", "50")
    options = GatewaySettings().publisher_options()
    assert (options.receipts, options.receipt_timeout, options.receipt_fallback) == (True, 5, 50)


def test_packs_acknowledged_by_the_embedded_broker_then_lost_in_its_restart_are_stored_once(
    tmp_path: Path,
    city: tuple[str, Conn, str],
    embedded_broker: BrokerUnderTest,
    workers: Workers,
) -> None:
    """rumqttd keeps nothing: packs it acknowledged while the worker was away die with it."""
    assert embedded_broker.handle is not None
    url, conn, gateway_id = city
    publisher = _publisher(embedded_broker, gateway_id, tmp_path / "outbox.sqlite")
    try:
        for n in range(4):
            publisher.put(_pack(gateway_id, 10 * n, 10, sensor=n))
        assert publisher.wait_until(lambda h: h.acknowledged >= 4, 10)
        embedded_broker.handle.restart()
        workers.start(url, broker=embedded_broker)
        # The gateway's re-send at reconnect may reach the new broker before the worker has
        # subscribed (and be lost again); the receipt timeout (30 s) then sends them once more.
        assert publisher.wait_until(lambda h: h.outbox_depth == 0, 75), publisher.health()
        time.sleep(0.5)
        assert _count(conn) == 40
        assert _count(conn, "SELECT count(*) FROM pack_ledger") == 4
        assert publisher.health().connects >= 2
    finally:
        publisher.stop()
        publisher.outbox.close()
