"""The publisher against a real broker: delivery, outage, kill -9, last will, TLS.

Every test uses its own gateway id, so its topics are its own. Both ends are counted: each pack
carries ``RECORDS`` readings whose time encodes the pack's number, and the subscriber decodes
every message it gets, so a lost, doubled or reordered pack shows.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.outbox import Outbox
from gateway.publisher import Publisher, PublisherOptions, TLSOptions, backoff_delay
from gateway.senml import Record, decode, encode
from gateway.topics import status_topic, up_topic
from services.devstack.broker import Mosquitto
from tests.fixtures.broker import (
    BrokerUnderTest,
    MqttConnect,
    Subscriber,
    require,
    tls_mosquitto,
)

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 3
T0 = 1_750_000_000.0  # absolute (>= 2**28), so decoding does not shift it by "now"


def make_pack(gateway_id: str, number: int) -> bytes:
    return encode(
        Record(name=f"{gateway_id}-s{j}/flow", time=T0 + number, value=number + j, unit="m3/s")
        for j in range(RECORDS)
    )


def gateway_id() -> str:
    return f"gw-{uuid.uuid4().hex[:12]}"


class Arrivals:
    """What the subscriber got, decoded: records in arrival order and pack numbers."""

    def __init__(self, messages: list[mqtt.MQTTMessage]) -> None:
        self.records = [r for m in messages for r in decode(bytes(m.payload), time.time())]
        self.packs = [int(decode(bytes(m.payload), time.time())[0].time - T0) for m in messages]

    @property
    def distinct(self) -> set[tuple[str, float]]:
        return {(r.name, r.time) for r in self.records}

    @property
    def first_arrivals(self) -> list[int]:
        return list(dict.fromkeys(self.packs))


def wait_for_packs(subscriber: Subscriber, count: int, timeout: float = 15) -> Arrivals:
    """Wait until ``count`` distinct packs arrived (repeats do not count), then decode all."""
    seen: set[float] = set()
    done = 0

    def have_all() -> bool:
        nonlocal done
        seen.update(
            decode(bytes(m.payload), time.time())[0].time for m in subscriber.messages[done:]
        )
        done = len(subscriber.messages)
        return len(seen) >= count

    with subscriber.arrived:
        subscriber.arrived.wait_for(have_all, timeout)
        return Arrivals(list(subscriber.messages))


def flush_acks(subscriber: Subscriber) -> None:
    """Return once the broker processed everything the subscriber sent so far.

    One connection's packets are handled in order, so a SUBACK means the PUBACKs before it
    were taken too.
    """
    subscribed = threading.Event()
    subscriber.client.on_subscribe = lambda *_: subscribed.set()
    subscriber.client.subscribe(f"test/sync/{uuid.uuid4().hex}", qos=0)
    assert subscribed.wait(10), "no SUBACK"


def options_for(broker: BrokerUnderTest, gateway: str, **overrides: object) -> PublisherOptions:
    settings: dict[str, object] = {
        "gateway_id": gateway,
        "host": broker.host,
        "port": broker.port,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "goodbye_timeout": 2.0,
        # These tests are about the broker link alone (no platform sends receipts here);
        # tests/gateway/test_receipts.py covers receipts.
        "receipts": False,
    }
    settings.update(overrides)
    return PublisherOptions(**settings)  # type: ignore[arg-type]


@pytest.fixture
def publishers(tmp_path: Path) -> Iterator[Callable[..., Publisher]]:
    """``publishers(options, outbox=None)`` -> a started publisher, stopped at teardown."""
    started: list[tuple[Publisher, Outbox]] = []

    def start(options: PublisherOptions, outbox: Outbox | None = None) -> Publisher:
        outbox = outbox or Outbox(tmp_path / f"{options.gateway_id}-{len(started)}.sqlite")
        publisher = Publisher(outbox, options)
        publisher.start()
        started.append((publisher, outbox))
        return publisher

    yield start
    for publisher, outbox in started:
        publisher.stop()
        outbox.close()


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``processes(outbox_path, broker, gateway, window, freeze_after=0)``: a publisher process,
    connected (see ``_publisher_process``)."""
    spawned: list[subprocess.Popen[bytes]] = []

    def spawn(
        path: Path, broker: BrokerUnderTest, gateway: str, window: int, freeze_after: int = 0
    ) -> subprocess.Popen[bytes]:
        args = [str(path), broker.host, str(broker.port), gateway, str(window), str(freeze_after)]
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.gateway._publisher_process", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        spawned.append(process)
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=15), "the publisher process did not connect"
        assert process.stdout.readline() == b"connected\n"
        return process

    yield spawn
    for process in spawned:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL


def test_backoff_grows_with_jitter_between_floor_and_cap() -> None:
    rng = random.Random(5)
    delays = [[backoff_delay(a, 0.5, 8.0, rng) for _ in range(200)] for a in range(8)]
    assert all(d == 0.5 for d in delays[0])
    for attempt, sample in enumerate(delays[1:], start=1):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert all(0.5 <= d <= ceiling for d in sample)
        assert len(set(sample)) > 150  # jittered, not one value
    assert max(delays[7]) > 7.0  # reaches the cap's neighbourhood


def test_publishes_every_pack_once_and_empties_the_outbox(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, publishers: Callable[..., Publisher]
) -> None:
    gateway, count = gateway_id(), 300
    readings = mqtt_connect(mqtt_broker, subscribe=up_topic(gateway))
    publisher = publishers(options_for(mqtt_broker, gateway))
    seqs = [publisher.put(make_pack(gateway, n)) for n in range(1, count + 1)]

    assert len(readings.wait_for(count)) == count
    assert publisher.outbox.wait_empty(timeout=10)
    arrived = Arrivals(readings.wait_for(count + 1, timeout=0.3))  # room for a double to show
    assert arrived.packs == list(range(1, count + 1))  # each once, in order
    assert len(arrived.records) == len(arrived.distinct) == count * RECORDS
    health = publisher.health()
    assert (health.connected, health.outbox_depth, health.in_flight) == (True, 0, 0)
    assert health.acknowledged == count
    assert health.last_publish_at is not None
    assert seqs == sorted(seqs)


def test_status_is_retained_online_then_offline_on_a_clean_stop(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, publishers: Callable[..., Publisher]
) -> None:
    gateway = gateway_id()
    publisher = publishers(options_for(mqtt_broker, gateway))
    assert publisher.wait_until(lambda h: h.connected, timeout=10)
    # A subscriber that comes later still learns the state: it is retained.
    late = mqtt_connect(mqtt_broker, subscribe=status_topic(gateway))
    (online,) = late.wait_for(1)
    assert (online.payload, online.retain) == (b"online", True)
    publisher.stop()
    assert [m.payload for m in late.wait_for(2)] == [b"online", b"offline"]
    assert not publisher.health().connected


def test_broker_outage_loses_nothing_and_doubles_nothing(
    own_broker: BrokerUnderTest, mqtt_connect: MqttConnect, publishers: Callable[..., Publisher]
) -> None:
    require(own_broker, persistence=True, restartable=True)
    assert own_broker.handle is not None
    gateway, before, during = gateway_id(), 40, 60
    # A persistent session, so what is published while the subscriber reconnects waits for it.
    readings = mqtt_connect(own_broker, persistent=True, subscribe=up_topic(gateway))
    publisher = publishers(options_for(own_broker, gateway))
    for n in range(1, before + 1):
        publisher.put(make_pack(gateway, n))
    assert publisher.outbox.wait_empty(timeout=10)
    assert len(readings.wait_for(before)) == before
    # The subscriber's own PUBACKs must reach the broker before it stops, or the broker rightly
    # sends those messages again after the restart: a double we would wrongly blame on the gateway.
    flush_acks(readings)

    own_broker.handle.stop()
    assert publisher.wait_until(lambda h: not h.connected, timeout=10)
    for n in range(before + 1, before + during + 1):
        publisher.put(make_pack(gateway, n))
    assert publisher.health().outbox_depth == during, publisher.health()  # held on disk
    own_broker.handle.start()

    total = before + during
    assert publisher.outbox.wait_empty(timeout=15)
    assert len(readings.wait_for(total, timeout=15)) == total
    arrived = Arrivals(readings.wait_for(total + 1, timeout=0.5))
    assert arrived.packs == list(range(1, total + 1))  # in order, each once
    assert len(arrived.records) == len(arrived.distinct) == total * RECORDS
    health = publisher.health()
    assert health.connects == 2
    assert health.acknowledged == total
    assert health.last_error is not None  # the outage was noticed and reported


def test_broker_crash_with_packs_in_flight_replays_them_in_order(
    own_broker: BrokerUnderTest, mqtt_connect: MqttConnect, publishers: Callable[..., Publisher]
) -> None:
    """Packs written to the socket but never taken by the broker are not lost: only a PUBACK
    deletes, and the next connection replays from the oldest pack."""
    broker, count = own_broker.handle, 50
    if not isinstance(broker, Mosquitto) or broker._process is None:
        pytest.skip("freezing the broker needs a Mosquitto process of our own")
    pid = broker._process.pid
    gateway = gateway_id()
    # A fixed 1 s reconnect delay leaves time to subscribe anew after the crash (a crashed
    # Mosquitto may forget a session younger than its autosave interval).
    publisher = publishers(options_for(own_broker, gateway, backoff_initial=1.0, backoff_max=1.0))
    assert publisher.wait_until(lambda h: h.connected, timeout=10)

    os.kill(pid, signal.SIGSTOP)  # frozen: reads nothing, acknowledges nothing
    for n in range(1, count + 1):
        publisher.put(make_pack(gateway, n))
    assert publisher.wait_until(lambda h: h.in_flight == count, timeout=10)
    broker.stop(signal.SIGKILL)  # what it had not read dies with it
    assert publisher.wait_until(lambda h: not h.connected, timeout=10)
    broker.start()
    readings = mqtt_connect(own_broker, subscribe=up_topic(gateway))
    flush_acks(readings)  # the subscription is in place
    assert not publisher.health().connected, "the gateway came back before the subscriber"

    arrived = wait_for_packs(readings, count)
    assert publisher.outbox.wait_empty(timeout=10)
    assert Arrivals(readings.wait_for(count + 1, timeout=0.3)).packs == list(range(1, count + 1))
    assert len(arrived.distinct) == count * RECORDS


def test_gateway_killed_mid_stream_loses_nothing_and_keeps_first_arrival_order(
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    publishers: Callable[..., Publisher],
    processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    gateway, count = gateway_id(), 1500
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        for n in range(1, count + 1):
            outbox.put(up_topic(gateway), make_pack(gateway, n))
    readings = mqtt_connect(mqtt_broker, subscribe=up_topic(gateway))

    first = processes(path, mqtt_broker, gateway, 5, freeze_after=count // 3)
    readings.wait_for(count // 3)
    kill(first)  # frozen by now, or about to be: either way with packs unacknowledged
    with Outbox(path) as outbox:
        left = outbox.depth()
    assert 0 < left < count, f"the kill did not land mid-stream: {left} left"

    second = publishers(options_for(mqtt_broker, gateway), Outbox(path))
    assert second.outbox.wait_empty(timeout=15)
    arrived = wait_for_packs(readings, count)
    missing = set(range(1, count + 1)) - set(arrived.packs)
    assert not missing, (
        f"{sorted(missing)} lost; {left} left at the kill; {len(arrived.packs)} msgs"
    )
    assert len(arrived.distinct) == count * RECORDS  # everything put arrived
    assert len(arrived.records) >= count * RECORDS  # at least once: the unacked may repeat
    assert arrived.first_arrivals == list(range(1, count + 1))
    assert second.health().acknowledged == left


def test_last_will_marks_a_killed_gateway_offline(
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    gateway = gateway_id()
    status = mqtt_connect(mqtt_broker, subscribe=status_topic(gateway))
    process = processes(tmp_path / "outbox.sqlite", mqtt_broker, gateway, 100)
    assert [m.payload for m in status.wait_for(1)] == [b"online"]
    kill(process)
    assert [m.payload for m in status.wait_for(2)] == [b"online", b"offline"]
    late = mqtt_connect(mqtt_broker, subscribe=status_topic(gateway))
    (retained,) = late.wait_for(1)
    assert (retained.payload, retained.retain) == (b"offline", True)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[BrokerUnderTest, int, dict[str, Path]]]:
    """Mosquitto with a plain listener and a TLS one that requires a client certificate."""
    with tls_mosquitto(tmp_path, require_certificate=True) as started:
        yield started


def test_tls_with_a_client_certificate_from_a_test_ca(
    tls_broker: tuple[BrokerUnderTest, int, dict[str, Path]],
    mqtt_connect: MqttConnect,
    publishers: Callable[..., Publisher],
) -> None:
    broker, tls_port, pki = tls_broker
    gateway, count = gateway_id(), 10
    readings = mqtt_connect(broker, subscribe=up_topic(gateway))  # on the plain listener
    tls = TLSOptions(ca_file=pki["ca.crt"], cert_file=pki["client.crt"], key_file=pki["client.key"])
    publisher = publishers(options_for(broker, gateway, port=tls_port, tls=tls))
    for n in range(1, count + 1):
        publisher.put(make_pack(gateway, n))
    assert publisher.outbox.wait_empty(timeout=10), publisher.health().last_error
    assert Arrivals(readings.wait_for(count)).packs == list(range(1, count + 1))

    # Without a client certificate the broker refuses the handshake: nothing is sent or lost.
    anonymous = publishers(
        options_for(broker, gateway_id(), port=tls_port, tls=TLSOptions(ca_file=pki["ca.crt"]))
    )
    anonymous.put(make_pack(gateway, 0))
    assert anonymous.wait_until(lambda h: h.last_error is not None, timeout=10)
    health = anonymous.health()
    assert (health.connected, health.connects, health.outbox_depth) == (False, 0, 1)
