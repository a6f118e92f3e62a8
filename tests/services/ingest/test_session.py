"""The worker's MQTT session (services/ingest/session.py) on its own, against a real broker.

What the worker tests do not single out: the packet framing across reads, a full inbox that
keeps the connection alive, receipts past the broker's receive maximum, credentials, and TLS
checked against the system's CA store."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mqtt5
import pytest

from gateway import topics
from gateway.receipts import decode_receipt
from services.devstack.broker import INGEST_USER, Mosquitto, Rumqttd, find_mosquitto
from services.ingest.session import Message, MqttSession, SessionError, packet_size
from tests.deploy.waiting import wait_for
from tests.fixtures.broker import BrokerUnderTest, MqttConnect, require, tls_mosquitto


def _packets() -> list[bytes]:
    """Packets of every length-field size (1 to 4 bytes), written by the codec."""
    return [
        mqtt5.PingRespPacket().write(),
        mqtt5.PubAckPacket(7).write(),
        *(
            mqtt5.PublishPacket(
                "ssc/v1/gw-1/up",
                b"x" * size,
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                packet_id=9,
                user_properties=[("pack", "s:1:2")],
            ).write()
            for size in (0, 90, 127, 16_000, 16_384, 2_100_000)
        ),
    ]


def test_packet_size_frames_packets_split_anywhere() -> None:
    for packet in _packets():
        header = next(i for i in range(1, 5) if not packet[i] & 0x80) + 1
        for cut in range(header):
            assert packet_size(packet[:cut], 0) is None
        assert packet_size(packet[:header], 0) == len(packet)
        assert packet_size(b"junk" + packet, 4) == len(packet)


def test_a_length_field_over_four_bytes_is_refused() -> None:
    with pytest.raises(SessionError, match="over 4 bytes"):
        packet_size(b"\x30\xff\xff\xff\xff\x01", 0)


class Session:
    """An MqttSession started on ``broker``, its inbox, closed at the end."""

    def __init__(
        self,
        broker_url: str,
        inbox_size: int = 1000,
        client_id: str | None = None,
        **options: object,
    ) -> None:
        self.inbox: queue.Queue[Message | None] = queue.Queue(inbox_size)
        self.closing = threading.Event()
        self.session = MqttSession(
            url=broker_url,
            client_id=client_id or f"test-session-{time.monotonic_ns()}",
            inbox=self.inbox,
            closing=self.closing,
            **options,  # type: ignore[arg-type]
        )
        self.session.start()

    def take(self, count: int, topic: str, timeout: float = 10.0) -> list[Message]:
        """Up to ``count`` messages on ``topic``; others (on a shared broker, the retained
        statuses of other tests' gateways) are taken from the inbox and left aside."""
        taken: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(taken) < count and time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if message is not None and message.topic == topic:
                taken.append(message)
        return taken

    def close(self) -> None:
        self.closing.set()
        self.session.close()


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    started: list[Session] = []
    yield started
    for session in started:
        session.close()


def test_a_full_inbox_keeps_the_connection_alive(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, sessions: list[Session]
) -> None:
    # Keep-alive 2 s. The inbox holds one message and nobody takes it for 8 s, so the network
    # thread waits on the next one all that time, reading nothing: it keeps pinging (a broker
    # may drop a client silent for 3 s; neither broker here did in this test), and once reading
    # again it must not take the PINGRESP that waited unread for a dead broker and reconnect
    # (the broker would then deliver the unacknowledged messages again, out of order).
    sessions.append(s := Session(mqtt_broker.url, inbox_size=1, keep_alive_s=2))
    assert s.session.subscribed.wait(10)
    gateway = f"gw-{time.monotonic_ns()}"
    publisher = mqtt_connect(mqtt_broker)
    for n in range(5):
        publisher.client.publish(topics.up_topic(gateway), f"[{n}]".encode(), qos=1)
    time.sleep(8)
    messages = s.take(5, topics.up_topic(gateway))
    assert [m.payload for m in messages] == [f"[{n}]".encode() for n in range(5)]
    assert {m.connection for m in messages} == {1}  # never reconnected
    assert s.session.connection == 1


def test_receipts_past_the_brokers_receive_maximum_all_arrive(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, sessions: list[Session]
) -> None:
    # Mosquitto lets a client have 1,000 QoS 1 messages unacknowledged (its receive maximum),
    # the embedded broker fewer: 3,000 receipts at once must wait for the window, not break it.
    sessions.append(s := Session(mqtt_broker.url))
    assert s.session.subscribed.wait(10)
    prefix = f"gw{time.monotonic_ns()}"
    downs = mqtt_connect(mqtt_broker, subscribe="ssc/v1/+/down")
    done = {(f"{prefix}-{n}", "s"): [n + 1] for n in range(3000)}
    assert s.session.send_receipts(done) == 3000
    arrived = [
        m for m in downs.wait_for(3000, timeout=30) if m.topic.startswith(f"ssc/v1/{prefix}")
    ]
    assert len(arrived) == 3000
    receipts = [decode_receipt(bytes(m.payload)) for m in arrived]
    assert sorted(r.ranges[0][0] for r in receipts if r is not None) == list(range(1, 3001))
    assert s.session.connection == 1


def test_acknowledged_messages_are_not_redelivered_and_the_others_are(
    own_broker: BrokerUnderTest, mqtt_connect: MqttConnect, sessions: list[Session]
) -> None:
    """The acknowledgements of a batch go out in one write, and only those: after a reconnect
    the broker redelivers exactly the unacknowledged ones."""
    client_id = f"test-session-{time.monotonic_ns()}"
    inbox: queue.Queue[Message | None] = queue.Queue(100)
    closing = threading.Event()
    session = MqttSession(url=own_broker.url, client_id=client_id, inbox=inbox, closing=closing)
    session.start()
    assert session.subscribed.wait(10)
    gateway = f"gw-{time.monotonic_ns()}"
    publisher = mqtt_connect(own_broker)
    for n in range(10):
        publisher.client.publish(topics.up_topic(gateway), f"[{n}]".encode(), qos=1)
    received = [inbox.get(timeout=10) for _ in range(10)]
    session.acknowledge([m for m in received if m is not None and m.payload < b"[5]"])
    time.sleep(0.5)  # the acknowledgements reach the broker before we go
    closing.set()
    session.close()

    sessions.append(again := Session(own_broker.url, client_id=client_id))
    redelivered = again.take(5, topics.up_topic(gateway))
    assert sorted(m.payload for m in redelivered) == [f"[{n}]".encode() for n in range(5, 10)]
    assert again.take(1, topics.up_topic(gateway), timeout=1) == []


@pytest.fixture
def mosquitto_with_users(tmp_path: Path) -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.skip("credentials and ACLs need Mosquitto (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto", users={INGEST_USER: "right-password"})
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def test_credentials_are_sent_and_a_refusal_is_logged_and_retried(
    mosquitto_with_users: Mosquitto, sessions: list[Session], caplog: pytest.LogCaptureFixture
) -> None:
    url = mosquitto_with_users.url
    sessions.append(good := Session(url, username=INGEST_USER, password="right-password"))
    assert good.session.subscribed.wait(10)

    with caplog.at_level(logging.ERROR, logger="services.ingest.session"):
        sessions.append(bad := Session(url, username=INGEST_USER, password="wrong"))
        wait_for(lambda: "the broker refused the connection" in caplog.text, "the refusal logged")
    assert not bad.session.subscribed.is_set()
    assert bad.session.connection == 0


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[BrokerUnderTest, int, dict[str, Path]]]:
    with tls_mosquitto(tmp_path, require_certificate=False) as started:
        yield started


def test_tls_trusts_the_system_ca_store_and_nothing_else(
    tls_broker: tuple[BrokerUnderTest, int, dict[str, Path]],
    mqtt_connect: MqttConnect,
    sessions: list[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, tls_port, pki = tls_broker
    url = f"mqtts://127.0.0.1:{tls_port}"
    # A broker whose CA the system does not trust is refused at the handshake...
    with caplog.at_level(logging.WARNING, logger="services.ingest.session"):
        sessions.append(untrusted := Session(url))
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, "the handshake refused")
    assert untrusted.session.connection == 0
    # ...and accepted once the CA is in the store OpenSSL reads (SSL_CERT_FILE).
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca.crt"]))
    sessions.append(trusted := Session(url))
    assert trusted.session.subscribed.wait(10)
    publisher = mqtt_connect(broker)
    publisher.client.publish(topics.up_topic("gw-tls"), b"[]", qos=1)
    (message,) = trusted.take(1, topics.up_topic("gw-tls"))
    assert (message.topic, message.payload) == (topics.up_topic("gw-tls"), b"[]")


def test_a_stale_connections_acknowledgements_are_never_sent(
    own_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    """After a reconnect the broker redelivers the unacknowledged messages, often under the
    same ids: acknowledging the first connection's copies then would acknowledge the new ones
    unstored. The session drops them; the broker delivers everything once more next time."""
    require(own_broker, persistence=True, restartable=True)
    assert isinstance(own_broker.handle, Mosquitto | Rumqttd)
    client_id = f"test-session-{time.monotonic_ns()}"
    gateway = f"gw-{time.monotonic_ns()}"
    topic = topics.up_topic(gateway)
    first = Session(own_broker.url, client_id=client_id)
    try:
        assert first.session.subscribed.wait(10)
        publisher = mqtt_connect(own_broker)
        for n in range(5):
            publisher.client.publish(topic, f"[{n}]".encode(), qos=1).wait_for_publish(10)
        old = first.take(5, topic)
        assert len(old) == 5
        own_broker.handle.stop()  # SIGTERM: Mosquitto saves the session and its queue
        own_broker.handle.start()
        again = first.take(5, topic, timeout=30)  # the second connection's copies
        assert {m.connection for m in again} == {2}
        first.session.acknowledge(old)  # stale: must not reach the broker
        time.sleep(1)
    finally:
        first.close()
    second = Session(own_broker.url, client_id=client_id)
    try:
        redelivered = second.take(5, topic, timeout=30)
        assert sorted(m.payload for m in redelivered) == [f"[{n}]".encode() for n in range(5)]
    finally:
        second.close()


def test_packets_arriving_a_byte_at_a_time_are_each_handled_once() -> None:
    """``_dispatch`` on a stream fed in pieces: every whole packet handled once, in order, and
    the bytes of the next one kept. A plain byte stream; no broker is needed to cut it."""
    session = MqttSession(
        url="mqtt://127.0.0.1:1",
        client_id="framing",
        inbox=queue.Queue(100),
        closing=threading.Event(),
    )
    published = [
        mqtt5.PublishPacket(
            topics.up_topic("gw-1"), f"[{n}]".encode() * (n * 40), qos=mqtt5.QoS.AT_LEAST_ONCE,
            packet_id=n + 1, user_properties=[("pack", f"s:{n + 1}:1")],
        )
        for n in range(6)
    ]  # fmt: skip
    stream = b"".join(packet.write() for packet in published)
    buffer = bytearray()
    for byte in stream:
        buffer.append(byte)
        del buffer[: session._dispatch(buffer)]
    assert buffer == b""
    delivered = [session._inbox.get_nowait() for _ in published]
    assert [(m.mid, m.payload, m.properties) for m in delivered if m is not None] == [
        (p.packet_id, p.payload, p.user_properties) for p in published
    ]
    assert session._inbox.empty()
