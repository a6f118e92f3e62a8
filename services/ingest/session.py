"""The ingestion worker's MQTT session: one paho MQTT 5 client, persistent, acknowledging by hand.

The session connects with ``clean_start`` off and a session expiry, so the broker keeps our
subscription and queue while we are away, and with a receive maximum, which bounds what the
broker sends before we acknowledge. paho's network thread only puts each message on the
worker's bounded inbox; when it is full the callback waits, the in-flight window fills, and the
broker holds the rest (nothing is buffered without bound here).

Acknowledgements carry the message id of the connection that received them: after a reconnect
the broker redelivers what was not acknowledged, so messages of an older connection are stored
(idempotently) but never acknowledged with a stale id. Receipts (``gateway.receipts``) go out on
each gateway's down topic through the same client.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway import topics
from gateway.receipts import encode_receipt

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Message:
    """A message as received, with the connection that received it (for its acknowledgement)."""

    connection: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float
    retained: bool = False
    properties: list[tuple[str, str]] | None = None  # MQTT 5 user properties


class MqttSession:
    """The worker's paho client: subscribes to every gateway's up and status topics (or, with
    ``group``, to their shared subscription), delivers to ``inbox``, acknowledges after commit."""

    def __init__(
        self,
        *,
        url: str,
        client_id: str,
        inbox: queue.Queue[Message | None],
        closing: threading.Event,
        group: str | None = None,
        session_expiry_s: int = 7 * 86400,
        receive_maximum: int = 1000,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.url = url
        self.group = group
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.connection = 0  # bumped at every CONNACK
        self.subscribed = threading.Event()
        self._inbox = inbox
        # Set when the worker stops: the callback gives up waiting on a full inbox (the message
        # stays unacknowledged, so the broker redelivers it) and a disconnect is expected.
        self._closing = closing
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if username:
            client.username_pw_set(username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client

    def start(self) -> None:
        """Start connecting (paho retries in its thread): a persistent MQTT 5 session."""
        url = urlsplit(self.url)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        properties.ReceiveMaximum = self.receive_maximum
        tls = url.scheme == "mqtts"
        if tls:
            self._client.tls_set()  # the system's CA store
        self._client.connect_async(
            url.hostname or "127.0.0.1",
            url.port or (8883 if tls else 1883),
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def acknowledge(self, messages: Iterable[Message]) -> None:
        """Acknowledge ``messages`` (stored) that this connection received."""
        current = self.connection
        for message in messages:
            if message.connection == current and message.qos > 0:
                self._client.ack(message.mid, message.qos)

    def send_receipts(self, done: Mapping[tuple[str, str], Sequence[int]]) -> int:
        """One receipt per (gateway, stream) naming its packs now stored; return how many."""
        for (gateway_id, stream), seqs in done.items():
            # QoS 1; a receipt lost anyway only makes the gateway resend, and the ledger
            # answers the copy with another receipt.
            self._client.publish(topics.down_topic(gateway_id), encode_receipt(stream, seqs), 1)
        return len(done)

    # -- paho's network thread ----------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: object,
    ) -> None:
        if reason.is_failure:
            # Not authorised, bad credentials...: paho retries; nothing is ingested meanwhile.
            log.error("the broker refused the connection: %s", reason)
            return
        self.connection += 1
        log.info("connected to %s (session present: %s)", self.url, flags.session_present)
        filters = [topics.UP_FILTER, topics.STATUS_FILTER]
        if self.group:
            filters = [topics.shared(self.group, f) for f in filters]
        client.subscribe([(f, 1) for f in filters])

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: object,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            # An ACL refusing the filter would otherwise mean a worker that ingests nothing.
            log.error("the broker refused the subscription: %s", ", ".join(refused))
            return
        self.subscribed.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: object,
        _properties: object,
    ) -> None:
        if self._closing.is_set():
            log.info("disconnected from the broker")
        else:
            log.warning("disconnected from the broker (%s); paho reconnects", reason)

    def _on_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        item = Message(
            self.connection,
            message.mid,
            message.qos,
            message.topic,
            bytes(message.payload),
            time.time(),
            message.retain,
            getattr(message.properties, "UserProperty", None),
        )
        # Back-pressure: wait here while the writer is behind; stop waiting on shutdown
        # (the message is not acknowledged, so the broker redelivers it).
        while not self._closing.is_set():
            try:
                self._inbox.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
