"""The ingestion worker's MQTT session: MQTT 5, persistent, acknowledging by hand.

The session connects with ``clean_start`` off and a session expiry, so the broker keeps our
subscription and queue while we are away, and with a receive maximum, which bounds what the
broker sends before we acknowledge. Its network thread only puts each message on the worker's
bounded inbox; when the inbox is full it waits (still pinging and sending acknowledgements), the
in-flight window fills, and the broker holds the rest (nothing is buffered without bound here).

Acknowledgements carry the message id of the connection that received them: after a reconnect
the broker redelivers what was not acknowledged, so messages of an older connection are stored
(idempotently) but never acknowledged with a stale id. Receipts (``gateway.receipts``) go out on
each gateway's down topic through the same connection, at QoS 1 within the broker's receive
maximum.

Packets are read and written by ``mqtt5`` (a sans-I/O MQTT 5 codec compiled from Rust); this
module is the session around it: the socket, TLS, CONNECT and SUBSCRIBE, keep-alive, reconnect
with backoff, and the acknowledgements of a whole batch in one write. paho (which the gateways
and the other services use) is pure Python: profiled on the worker at packs of 10 readings, its
network thread took 49 % of the worker's CPU, 21 % in decoding each PUBLISH's properties alone
(bench/bench_ingest.py --profile); ``mqtt5.read`` decodes the same packet in about a microsecond.
All socket I/O happens on the network thread (an SSL object must not be read and written from
two threads at once); the other threads hand it bytes and wake it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import mqtt5

from gateway import topics
from gateway.receipts import encode_receipt

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 60  # paho's default, which the worker used before
PING_AT = 0.5  # of the keep-alive period without a packet sent
CONNECT_TIMEOUT_S = 10.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 30.0
# A connection that lasted this long resets the backoff; one that ends sooner (a broker that
# takes us over, or a packet that breaks us each time) keeps doubling it, so the whole
# unacknowledged window is not redelivered every second.
STABLE_S = 10.0
# Receipts waiting for the broker's receive maximum to free a slot; past this the oldest go
# (logged): a gateway whose receipt never came resends its pack, and the ledger answers it with
# another receipt, so nothing is lost, only delayed.
MAX_QUEUED_RECEIPTS = 10_000
_READ_CHUNK = 256 * 1024


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


class SessionError(Exception):
    """The connection cannot go on (the broker refused it, closed it, or broke the protocol):
    the network thread drops it and connects again after a backoff."""


class RefusedError(SessionError):
    """The broker answered CONNECT with a failure (bad credentials, not authorised...)."""


def packet_size(buffer: bytes | bytearray | memoryview, offset: int) -> int | None:
    """The size of the packet starting at ``offset`` (fixed header included), or None while the
    buffer does not yet hold its whole length field.

    Only the framing: ``mqtt5.read`` decodes the packet. Knowing its size first means a packet
    split across reads is decoded once, when it is whole, and that a packet the codec refuses
    once whole is a broken packet, not one still arriving."""
    multiplier, length = 1, 0
    for index in range(offset + 1, min(offset + 5, len(buffer))):
        byte = buffer[index]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return index + 1 - offset + length
        multiplier *= 128
    if len(buffer) - offset >= 5:
        raise SessionError("malformed packet from the broker: its length takes over 4 bytes")
    return None


class MqttSession:
    """The worker's MQTT client: subscribes to every gateway's up and status topics (or, with
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
        keep_alive_s: int = KEEP_ALIVE_S,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.group = group
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.keep_alive_s = keep_alive_s  # asked for at every CONNECT
        self._keep_alive_period = keep_alive_s  # in force: the broker may override it (CONNACK)
        self.connection = 0  # bumped at every CONNACK
        self.subscribed = threading.Event()
        self._inbox = inbox
        self._username = username
        self._password = password
        # Set when the worker stops: the network thread gives up waiting on a full inbox (the
        # message stays unacknowledged, so the broker redelivers it) and a disconnect is expected.
        self._closing = closing
        self._shutdown = threading.Event()  # close(): flush, DISCONNECT, end the thread
        self._lock = threading.Lock()  # guards the two queues below
        self._outgoing: list[tuple[int, bytes]] = []  # (connection, bytes) for the thread
        self._receipts: collections.deque[tuple[str, bytes]] = collections.deque()
        self._dropped_receipts = 0
        # Made in start(), so that a session never started holds no sockets.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # The network thread's state for the current connection.
        self._sock: socket.socket | None = None
        self._unsent = bytearray()
        self._write_waits_for_read = False  # TLS: the last send needs a read first
        self._received = bytearray()  # read with the CONNACK, not yet dispatched
        self._last_sent = 0.0
        self._ping_sent: float | None = None
        self._broker_receive_max = 65535
        self._in_flight: set[int] = set()  # our receipts the broker has not acknowledged
        self._next_packet_id = 0

    def start(self) -> None:
        """Start connecting (retried in the network thread): a persistent MQTT 5 session."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Send what is queued (the last acknowledgements), disconnect, end the thread."""
        self._shutdown.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                # Still connecting (connect, TLS and CONNACK may each take CONNECT_TIMEOUT_S):
                # its sockets go with the process; closing them under it would only log noise.
                log.warning("the MQTT session did not end within 10 s")
                return
        for wake in (self._wake_r, self._wake_w):
            if wake is not None:
                wake.close()

    def acknowledge(self, messages: Iterable[Message]) -> None:
        """Acknowledge ``messages`` (stored) that this connection received: one write."""
        current = self.connection
        data = b"".join(
            [
                mqtt5.PubAckPacket(message.mid).write()
                for message in messages
                if message.connection == current and message.qos > 0
            ]
        )
        if data:
            with self._lock:
                self._outgoing.append((current, data))
            self._wake()

    def send_receipts(self, done: Mapping[tuple[str, str], Sequence[int]]) -> int:
        """One receipt per (gateway, stream) naming its packs now stored; return how many."""
        if not done:
            return 0
        with self._lock:
            for (gateway_id, stream), seqs in done.items():
                # QoS 1; a receipt lost anyway only makes the gateway resend, and the ledger
                # answers the copy with another receipt.
                self._receipts.append((topics.down_topic(gateway_id), encode_receipt(stream, seqs)))
            while len(self._receipts) > MAX_QUEUED_RECEIPTS:
                self._receipts.popleft()
                self._dropped_receipts += 1
        self._wake()
        return len(done)

    def _wake(self) -> None:
        # BlockingIOError: a wake is already pending; OSError: we are closing.
        with contextlib.suppress(BlockingIOError, OSError):
            if self._wake_w is not None:
                self._wake_w.send(b"\0")

    # -- the network thread --------------------------------------------------------------------

    def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._shutdown.is_set():
            connected_at: float | None = None
            try:
                self._connect()
                connected_at = time.monotonic()
                self._serve()
                return  # closed on purpose
            except RefusedError as exc:
                log.error("%s", exc)
            except (OSError, SessionError) as exc:
                if self._shutdown.is_set() or self._closing.is_set():
                    log.info("disconnected from the broker")
                else:
                    log.warning("disconnected from the broker (%s); reconnecting", exc)
            except Exception:
                # A defect here must not leave a worker that silently ingests nothing.
                log.exception("the MQTT session failed; reconnecting")
            finally:
                self._drop_connection()
            if connected_at is not None and time.monotonic() - connected_at >= STABLE_S:
                delay = RECONNECT_MIN_S
            if self._shutdown.wait(delay):
                return
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _connect(self) -> None:
        url = urlsplit(self.url)
        tls = url.scheme == "mqtts"
        host = url.hostname or "127.0.0.1"
        sock = socket.create_connection(
            (host, url.port or (8883 if tls else 1883)), timeout=CONNECT_TIMEOUT_S
        )
        self._sock = sock  # closed by _drop_connection whatever happens next
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            # The system's CA store, and the broker's name checked against its certificate.
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            self._sock = sock
        connect = mqtt5.ConnectPacket(
            self.client_id,
            username=self._username or None,
            password=self._password.encode() if self._username and self._password else None,
            clean_start=False,
            keep_alive=self.keep_alive_s,
            session_expiry_interval=self.session_expiry_s,
            receive_max=self.receive_maximum,
        )
        sock.sendall(connect.write())
        connack, self._received = self._read_one(sock, time.monotonic() + CONNECT_TIMEOUT_S)
        if not isinstance(connack, mqtt5.ConnAckPacket):
            raise SessionError(f"the broker answered CONNECT with {type(connack).__name__}")
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            # Not authorised, bad credentials...: retried; nothing is ingested meanwhile.
            raise RefusedError(f"the broker refused the connection: {connack.reason_code.name}")
        self._keep_alive_period = (
            self.keep_alive_s if connack.server_keep_alive is None else connack.server_keep_alive
        )
        self._broker_receive_max = connack.receive_max
        sock.setblocking(False)
        self.connection += 1
        log.info("connected to %s (session present: %s)", self.url, connack.session_present)
        filters = [topics.UP_FILTER, topics.STATUS_FILTER]
        if self.group:
            filters = [topics.shared(self.group, f) for f in filters]
        subscribe = mqtt5.SubscribePacket(
            self._packet_id(),
            # As paho subscribed: a live message arrives with its retain flag off, so only the
            # broker's retained copy, sent at subscription, is marked retained.
            [
                mqtt5.TopicFilter(f, max_qos=mqtt5.QoS.AT_LEAST_ONCE, retain_as_published=False)
                for f in filters
            ],
        )
        self._unsent += subscribe.write()
        self._last_sent = time.monotonic()

    def _read_one(self, sock: socket.socket, deadline: float) -> tuple[mqtt5.Packet, bytearray]:
        """Read one packet, blocking (the CONNACK), and what came after it (a persistent
        session's queued messages follow the CONNACK at once)."""
        buffer = bytearray()
        while True:
            size = packet_size(buffer, 0)
            if size is not None and len(buffer) >= size:
                with memoryview(buffer) as view:
                    packet = self._decode(view[:size])
                return packet, buffer[size:]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionError("no CONNACK from the broker")
            sock.settimeout(remaining)
            data = sock.recv(_READ_CHUNK)
            if not data:
                raise SessionError("the broker closed the connection")
            buffer += data

    @staticmethod
    def _decode(view: memoryview) -> mqtt5.Packet:
        try:
            packet, _ = mqtt5.read(view)
        except (ValueError, IndexError) as exc:
            raise SessionError(f"malformed packet from the broker: {exc}") from exc
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            # A panic in the compiled codec (pyo3's PanicException derives from BaseException,
            # e.g. on a topic that is not UTF-8): a broken packet, not a reason to end the thread.
            raise SessionError(f"the codec failed on a packet from the broker: {exc!r}") from exc
        return packet

    def _serve(self) -> None:
        """Read and dispatch until the connection ends; on close(), flush and DISCONNECT."""
        sock, wake = self._sock, self._wake_r
        assert sock is not None
        assert wake is not None
        buffer, self._received = self._received, bytearray()
        del buffer[: self._dispatch(buffer)]
        while True:
            self._take_outgoing()
            if self._shutdown.is_set():
                self._unsent += mqtt5.DisconnectPacket().write()
                self._flush(sock, block=True)
                return
            self._flush(sock)
            self._keep_alive()
            pending_tls = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            readable, _, _ = select.select(
                [sock, wake],
                [sock] if self._unsent and not self._write_waits_for_read else [],
                [],
                0 if pending_tls else self._until_ping(),
            )
            if wake in readable:
                self._drain_wakes(wake)
            if sock in readable or pending_tls:
                self._write_waits_for_read = False
                try:
                    data = sock.recv(_READ_CHUNK)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                if not data:
                    raise SessionError("the broker closed the connection")
                buffer += data
                consumed = self._dispatch(buffer)
                del buffer[:consumed]

    def _dispatch(self, buffer: bytearray) -> int:
        """Handle every whole packet in ``buffer``; return how many bytes they took."""
        offset = 0
        view = memoryview(buffer)
        try:
            while (size := packet_size(view, offset)) is not None and len(view) - offset >= size:
                self._handle(self._decode(view[offset : offset + size]))
                offset += size
        finally:
            view.release()
        return offset

    def _handle(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.PublishPacket):
            self._deliver(packet)
        elif isinstance(packet, mqtt5.PubAckPacket):
            self._in_flight.discard(packet.packet_id)
            if packet.reason_code.value >= 0x80:
                log.warning("the broker refused a receipt: %s", packet.reason_code.name)
        elif isinstance(packet, mqtt5.SubAckPacket):
            refused = [code.name for code in packet.reason_codes if code.value >= 0x80]
            if refused:
                # An ACL refusing the filter would otherwise mean a worker that ingests nothing.
                log.error("the broker refused the subscription: %s", ", ".join(refused))
            else:
                self.subscribed.set()
        elif isinstance(packet, mqtt5.PingRespPacket):
            self._ping_sent = None
        elif isinstance(packet, mqtt5.DisconnectPacket):
            raise SessionError(
                f"the broker disconnected: {packet.reason_code.name}"
                + (f" ({packet.reason_str})" if packet.reason_str else "")
            )
        else:
            # QoS 2 flows, a second CONNACK, AUTH: nothing this session asked for.
            raise SessionError(f"unexpected {type(packet).__name__} from the broker")

    def _deliver(self, packet: mqtt5.PublishPacket) -> None:
        if packet.qos == mqtt5.QoS.EXACTLY_ONCE:
            raise SessionError("a QoS 2 message on a QoS 1 subscription")
        item = Message(
            self.connection,
            packet.packet_id or 0,
            int(packet.qos),
            packet.topic,
            packet.payload,
            time.time(),
            packet.retain,
            packet.user_properties or None,
        )
        # Back-pressure: wait here while the writer is behind, keeping the connection alive and
        # sending the acknowledgements that free the writer; stop waiting on shutdown (the
        # message is not acknowledged, so the broker redelivers it).
        waited = False
        while not (self._closing.is_set() or self._shutdown.is_set()):
            try:
                self._inbox.put(item, timeout=0.2)
                if waited and self._ping_sent is not None:
                    # Its PINGRESP is unread in the socket: time it from now, when reading resumes.
                    self._ping_sent = time.monotonic()
                return
            except queue.Full:
                waited = True
                sock = self._sock
                assert sock is not None
                self._take_outgoing()
                self._flush(sock)
                self._keep_alive(waiting=True)

    def _take_outgoing(self) -> None:
        """Move what the other threads queued into the unsent bytes of this connection."""
        with self._lock:
            outgoing, self._outgoing = self._outgoing, []
            while self._receipts and len(self._in_flight) < self._broker_receive_max:
                topic, payload = self._receipts.popleft()
                packet_id = self._packet_id()
                self._in_flight.add(packet_id)
                receipt = mqtt5.PublishPacket(
                    topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=packet_id
                )
                self._unsent += receipt.write()
            dropped, self._dropped_receipts = self._dropped_receipts, 0
        if dropped:
            log.warning("%d receipts dropped while the broker was slow; gateways resend", dropped)
        for connection, data in outgoing:
            if connection == self.connection:  # a stale connection's ids mean nothing now
                self._unsent += data

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_packet_id = self._next_packet_id % 65535 + 1
            if self._next_packet_id not in self._in_flight:
                return self._next_packet_id
        raise SessionError("no free packet id")  # only with 65,535 receipts in flight

    def _flush(self, sock: socket.socket, *, block: bool = False) -> None:
        if not self._unsent:
            return
        if block:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.sendall(self._unsent)
            self._unsent.clear()
        else:
            try:
                sent = sock.send(self._unsent)
            except ssl.SSLWantReadError:
                self._write_waits_for_read = True  # writable says nothing until we read
                return
            except (ssl.SSLWantWriteError, BlockingIOError):
                return
            del self._unsent[:sent]
        self._last_sent = time.monotonic()

    def _until_ping(self) -> float | None:
        """How long select may wait: until a ping is due or, while bytes wait to go out, until
        the broker has read nothing for a whole keep-alive period (then it is gone)."""
        if self._keep_alive_period <= 0:  # the broker turned keep-alive off: wait for traffic alone
            return None
        period = self._keep_alive_period if self._unsent else self._ping_every()
        return max(0.0, self._last_sent + period - time.monotonic())

    def _ping_every(self) -> float:
        # Before the keep-alive period is up, not at its end: a busy machine may run this
        # thread late, and the broker drops a client silent for 1.5 periods.
        return self._keep_alive_period * PING_AT

    def _keep_alive(self, *, waiting: bool = False) -> None:
        """PINGREQ at half a keep-alive period without sending; the connection is dead when a
        PINGRESP does not come within a period (not checked while ``waiting`` on a full inbox:
        then nothing is read), or when the broker has read nothing of ours for a period."""
        period = self._keep_alive_period
        if period <= 0:
            return
        now = time.monotonic()
        if self._unsent and now - self._last_sent > period:
            raise SessionError("the broker has read nothing for a keep-alive period")
        if not waiting and self._ping_sent is not None and now - self._ping_sent > period:
            raise SessionError("no PINGRESP from the broker")
        if now - self._last_sent >= self._ping_every() and not self._unsent:
            self._unsent += mqtt5.PingReqPacket().write()
            if self._ping_sent is None:
                self._ping_sent = now
            if self._sock is not None:
                self._flush(self._sock)

    @staticmethod
    def _drain_wakes(wake: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while wake.recv(4096):
                pass

    def _drop_connection(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._unsent.clear()
        self._ping_sent = None
        # Our receipts in flight are gone with the connection: resending them is not needed
        # (a gateway without its receipt resends the pack and gets another).
        self._in_flight.clear()
