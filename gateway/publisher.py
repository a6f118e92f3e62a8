"""Publishes the outbox to the broker: QoS 1, in order, deleting a pack only on its receipt.

One thread owns the connection. For each connection it makes a new paho client (MQTT 5,
callback API 2) and replays the outbox from its oldest pack, keeping at most ``window`` packs
unacknowledged by the broker. Every pack carries its identity (outbox stream and sequence) in
MQTT 5 user properties (``gateway.receipts`` says why there). A new client per connection,
rather than paho's own reconnect, makes the outbox the only record of what is outstanding:
paho's in-memory queue would resend the same packs a second time on top of the replay.

Receipts (issue 15): a broker's PUBACK is not proof of storage (Mosquitto saves every
``autosave_interval``, rumqttd never), so PUBACK only frees the pack's place in the window; the
pack leaves the outbox when the platform's receipt on ``ssc/v1/<gateway_id>/down`` names it. A
pack with no receipt ``receipt_timeout`` after its PUBACK is sent again (the ledger makes the
copy harmless), and so is everything in the outbox at each new connection. While no receipt
comes (the platform is down, the broker is up) that timeout doubles after each round of resends,
up to ``_RESEND_TIMEOUT_MAX``, and is ``receipt_timeout`` again at the next receipt: a platform
outage would otherwise have the broker queue a copy of every pack every 30 s. A platform that
never sends receipts (older than receipts) would make the outbox grow for ever: when no receipt
at all has come ``receipt_fallback`` after the first PUBACK, the publisher logs a warning and
deletes on PUBACK as before, until a receipt shows up. Once a receipt was seen it never falls
back on its own: a platform that goes quiet then is down, and that is when the outbox matters.

Order: packs are published in sequence order on one connection and the broker forwards a
client's QoS 1 messages in the order it received them, so the first arrival of each pack keeps
the outbox's order. A pack whose PUBACK was lost in a disconnect is sent again from the head at
the next connection (at least once; the ingestion service is idempotent on the reading's key).

The gateway's state is the retained ``ssc/v1/<gateway_id>/status``: ``online`` after every
connect, ``offline`` as the last will (a crash, a cut) and on a clean :meth:`Publisher.stop`.
Reconnects back off exponentially with jitter, so a fleet of gateways does not hammer a broker
that comes back. :meth:`Publisher.health` is the snapshot a health endpoint or status file shows.

Imports nothing from ``services``: this runs on the field device.
"""

from __future__ import annotations

import bisect
import enum
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.outbox import Entry, Outbox
from gateway.receipts import PackId, Receipt, ReceiptError, decode_receipt
from gateway.topics import check_gateway_id, down_topic, status_topic, up_topic

__all__ = [
    "Health",
    "Publisher",
    "PublisherOptions",
    "ReceiptMode",
    "TLSOptions",
    "backoff_delay",
]

logger = logging.getLogger(__name__)


class ReceiptMode(enum.StrEnum):
    """When the publisher deletes a pack from the outbox."""

    WAITING = "waiting"
    """No receipt seen yet: keep packs, fall back to PUBACK after ``receipt_fallback``."""
    RECEIPTS = "receipts"
    """The platform sends receipts: a pack leaves the outbox on its receipt."""
    PUBACK = "puback"
    """On the broker's PUBACK (receipts off, or the platform sent none)."""


ONLINE = b"online"
OFFLINE = b"offline"

# How long the network loop waits in select() before looking at the outbox again: the bound on
# the delay between a put from another thread and its publish, at 20 idle wake-ups a second.
_TICK = 0.05
# Packs put without a kick (straight into the outbox) are noticed within this time.
_POLL_INTERVAL = 1.0
# The resend timeout's ceiling while no receipt comes: an hour-long platform outage then costs
# the broker about ten queued copies of each pack (30 s doubling) rather than 120, and a
# platform back from it gets what it missed 10 minutes later at worst (at once after the first
# receipt of a new pack, which restarts the timeout at receipt_timeout).
_RESEND_TIMEOUT_MAX = 600.0


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """TLS to the broker. No CA file: the system's trust store. Cert and key: client auth."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker's certificate and host name."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if self.ca_file is None else str(self.ca_file)
        )
        if self.cert_file is not None:
            context.load_cert_chain(
                str(self.cert_file), None if self.key_file is None else str(self.key_file)
            )
        elif self.key_file is not None:
            raise ValueError("a TLS key file needs a certificate file")
        return context


@dataclass(frozen=True, slots=True)
class PublisherOptions:
    """How to reach the broker and how hard to push it."""

    gateway_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TLSOptions | None = None
    client_id: str | None = None
    """Defaults to the gateway id, so a restarted gateway takes over its old connection."""
    keepalive: int = 30
    window: int = 100
    """Unacknowledged packs at most (lowered to the broker's Receive Maximum when smaller).
    100 keeps a link with 50 ms round trips busy at 2,000 packs/s and matches the smallest
    broker window we run against (rumqttd's)."""
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    connect_timeout: float = 10.0
    """For the TCP and TLS handshakes and again for the CONNACK."""
    goodbye_timeout: float = 5.0
    """How long :meth:`Publisher.stop` waits for outstanding PUBACKs and the offline status."""
    receipts: bool = True
    """Keep packs until the platform's receipt; False: delete on PUBACK (no platform behind)."""
    receipt_timeout: float = 30.0
    """A pack acknowledged by the broker but not receipted this long later is sent again. Far
    above the platform's normal lag (a flush, 50 ms, plus a database commit), so a busy platform
    is not flooded with copies; well below Mosquitto's 10 s autosave being the only loss.
    Doubles after each round of resends that no receipt follows (module docstring)."""
    receipt_fallback: float = 120.0
    """With no receipt ever, delete on PUBACK this long after the first one (older platform)."""

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway_id)
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if self.receipt_timeout <= 0 or self.receipt_fallback <= 0:
            raise ValueError("receipt_timeout and receipt_fallback must be above 0")


@dataclass(frozen=True, slots=True)
class Health:
    """A snapshot of the publisher and its outbox. Times are seconds since the Unix epoch."""

    gateway_id: str
    connected: bool
    outbox_depth: int
    outbox_bytes: int
    in_flight: int
    last_publish_at: float | None
    """When the broker last acknowledged a pack."""
    last_error: str | None
    last_error_at: float | None
    connects: int
    acknowledged: int
    refused_by_broker: int
    """PUBACKs with a failure reason code; those packs stay in the outbox for the next connect."""
    dropped: int
    """Packs the outbox cap dropped (policy ``drop_oldest``)."""
    refused_by_cap: int
    """Packs the outbox cap refused (policy ``refuse_newest``, or too large)."""
    receipt_mode: str
    """``waiting``, ``receipts`` or ``puback`` (:class:`ReceiptMode`)."""
    awaiting_receipt: int
    """Packs the broker acknowledged whose receipt has not come yet."""
    receipted: int
    """Packs deleted on a receipt since start."""
    resent: int
    """Packs sent again because their receipt did not come within the resend timeout."""
    last_receipt_at: float | None
    receipt_lag_s: float | None
    """Publish to receipt, for the newest pack of the last receipt."""
    oldest_unreceipted_s: float | None
    """How long ago the oldest pack awaiting its receipt was acknowledged by the broker."""


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 for the first retry).

    Exponential with jitter: uniform between ``initial`` and ``initial * 2**attempt`` (at most
    ``maximum``), so gateways cut off together do not come back in step; the floor keeps a
    broker that refuses at once from being retried in a tight loop.
    """
    ceiling = min(maximum, initial * 2.0 ** min(attempt, 32))
    return rng.uniform(initial, ceiling)


class Publisher:
    """Drains an :class:`Outbox` to ``ssc/v1/<gateway_id>/up``; see the module docstring.

    ``start()`` runs the connection in a daemon thread, ``put()`` stores a pack and wakes it,
    ``stop()`` says offline and disconnects. The outbox stays open: the caller owns it.
    """

    def __init__(
        self, outbox: Outbox, options: PublisherOptions, rng: random.Random | None = None
    ) -> None:
        self.outbox = outbox
        self.options = options
        self.up_topic = up_topic(options.gateway_id)
        self.status_topic = status_topic(options.gateway_id)
        # Built once so that a bad CA, certificate or key fails here, not in a retry loop.
        self._tls_context = None if options.tls is None else options.tls.context()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Health fields, written by the publisher thread, read by anyone.
        self._state = threading.Condition(threading.RLock())
        self._connected = False
        self._last_publish_at: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._connects = 0
        self._acknowledged = 0
        self._refused_by_broker = 0
        self._mode = ReceiptMode.WAITING if options.receipts else ReceiptMode.PUBACK
        self._waiting_since: float | None = None  # first PUBACK while no receipt was seen
        self._receipted = 0
        self._resent = 0
        self._last_receipt_at: float | None = None
        self._receipt_lag: float | None = None
        # How long after its PUBACK an unreceipted pack is sent again (module docstring).
        self._resend_timeout = options.receipt_timeout
        self._resent_this_round = False
        self.down_topic = down_topic(options.gateway_id)
        # One connection's state, touched only by the publisher thread (paho runs the callbacks
        # inside client.loop(), which that thread calls).
        self._in_flight: dict[int, int] = {}  # mid -> seq
        # Sent on this connection and not receipted: seq -> when last sent (monotonic).
        self._sent_at: dict[int, float] = {}
        # Of those, acknowledged by the broker: seq -> when (monotonic), in PUBACK order.
        self._awaiting: dict[int, float] = {}
        self._cursor = 0  # highest seq handed to this connection
        self._limit = options.window
        self._acked_since_pump = False
        self._next_poll = 0.0

    # -- the caller's side ----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("publisher already started")
        self._thread = threading.Thread(
            target=self._run, name=f"publisher-{self.options.gateway_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Publish ``offline``, wait (bounded) for outstanding PUBACKs, and disconnect."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(
                timeout
                if timeout is not None
                else self.options.goodbye_timeout + self.options.connect_timeout + 1.0
            )

    def put(self, payload: bytes) -> int:
        """Store a pack for the up topic in the outbox and wake the publisher; return its seq."""
        seq = self.outbox.put(self.up_topic, payload)
        self._kick.set()
        return seq

    def kick(self) -> None:
        """Look at the outbox now (after putting into it directly)."""
        self._kick.set()

    def health(self) -> Health:
        stats = self.outbox.stats()
        with self._state:
            oldest = next(iter(self._awaiting.values()), None)
            return Health(
                gateway_id=self.options.gateway_id,
                connected=self._connected,
                outbox_depth=stats.depth,
                outbox_bytes=stats.bytes,
                in_flight=len(self._in_flight),
                last_publish_at=self._last_publish_at,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                connects=self._connects,
                acknowledged=self._acknowledged,
                refused_by_broker=self._refused_by_broker,
                dropped=stats.dropped,
                refused_by_cap=stats.refused,
                receipt_mode=self._mode.value,
                awaiting_receipt=len(self._awaiting),
                receipted=self._receipted,
                resent=self._resent,
                last_receipt_at=self._last_receipt_at,
                receipt_lag_s=self._receipt_lag,
                oldest_unreceipted_s=None if oldest is None else time.monotonic() - oldest,
            )

    def wait_until(self, predicate: Callable[[Health], bool], timeout: float) -> bool:
        """Block until ``predicate(self.health())`` holds; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._state:
            while not predicate(self.health()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # Woken on every state change; the slice also catches outbox changes that do
                # not go through the publisher (a cap drop during a put).
                self._state.wait(min(remaining, 0.1))
            return True

    # -- the publisher thread -------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            client = self._new_client()
            connects_before = self._connects
            try:
                self._session(client)
            except OSError as exc:  # refused, unreachable, TLS handshake, timeout
                self._record_error(f"connection to {self._where()} failed: {exc}")
            except Exception as exc:  # a bug or a closed outbox: log it, keep the gateway alive
                logger.exception("publisher %s: unexpected error", self.options.gateway_id)
                self._record_error(f"unexpected error: {exc!r}")
            finally:
                self._end_session(client)
            if self._connects != connects_before:
                attempt = 0  # the broker took us: the next outage starts the backoff afresh
            if self._stopping.is_set():
                break
            delay = backoff_delay(
                attempt, self.options.backoff_initial, self.options.backoff_max, self._rng
            )
            attempt += 1
            logger.info(
                "publisher %s: reconnecting to %s in %.2fs",
                self.options.gateway_id,
                self._where(),
                delay,
            )
            self._stopping.wait(delay)

    def _where(self) -> str:
        return f"{self.options.host}:{self.options.port}"

    def _new_client(self) -> mqtt.Client:
        options = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id or options.gateway_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        client.connect_timeout = options.connect_timeout
        # paho's own bound (20 by default) must not hold back our window (+1: the status); it
        # cannot change once connected, so the broker's Receive Maximum is applied in ours.
        client.max_inflight_messages_set(options.window + 1)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _session(self, client: mqtt.Client) -> None:
        """One connection, from CONNECT until it is lost or the publisher stops."""
        self._in_flight.clear()
        with self._state:
            self._sent_at.clear()
            self._awaiting.clear()
        # Replay from the oldest pack: whatever is still there has no receipt (or no PUBACK).
        self._cursor = 0
        self._limit = self.options.window
        client.connect(
            self.options.host, self.options.port, self.options.keepalive, clean_start=True
        )
        deadline = time.monotonic() + self.options.connect_timeout
        while not self._stopping.is_set():
            rc = client.loop(_TICK)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._record_error(f"connection to {self._where()} lost: {mqtt.error_string(rc)}")
                return
            if self._connected:
                self._pump(client)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK within {self.options.connect_timeout}s")
        if self._connected:
            self._goodbye(client)

    def _pump(self, client: mqtt.Client) -> None:
        """Fill the window with the next packs, in sequence order."""
        now = time.monotonic()
        if not (self._kick.is_set() or self._acked_since_pump or now >= self._next_poll):
            return
        room = self._limit - len(self._in_flight)
        if room <= 0:
            return
        self._kick.clear()
        self._acked_since_pump = False
        self._next_poll = now + _POLL_INTERVAL
        self._after_receipt_wait(now)
        oldest = self.outbox.first_seq()
        room -= self._resend_overdue(client, room, now, oldest)
        entries = self.outbox.peek(room, after=self._cursor) if room > 0 else []
        for entry in entries:
            self._send(client, entry, oldest, now)
            self._cursor = entry.seq

    def _send(self, client: mqtt.Client, entry: Entry, oldest: int, now: float) -> None:
        seq = entry.seq
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = PackId(self.outbox.stream, seq, min(oldest, seq)).properties()
        info = client.publish(entry.topic, entry.payload, qos=1, properties=properties)
        self._in_flight[info.mid] = seq
        with self._state:
            self._sent_at[seq] = now

    def _resend_overdue(self, client: mqtt.Client, room: int, now: float, oldest: int) -> int:
        """Send again (up to ``room``) the packs whose receipt is the resend timeout late."""
        if self._mode is ReceiptMode.PUBACK:
            return 0
        timeout = self._resend_timeout
        due = now - timeout
        overdue: list[int] = []
        # A round is over once no pack is overdue any more; one cut short by the window goes
        # on at the next pump with the same timeout, so a large outbox is not spread over
        # ever longer timeouts.
        round_over = True
        for seq, acked in self._awaiting.items():
            if acked > due:
                break  # in PUBACK order: the rest are younger
            if len(overdue) >= room:
                round_over = False
                break
            overdue.append(seq)
        sent = 0
        for seq in overdue:
            with self._state:
                del self._awaiting[seq]
            entry = self.outbox.get(seq)
            if entry is None:  # the cap dropped it meanwhile
                with self._state:
                    self._sent_at.pop(seq, None)
                continue
            self._send(client, entry, oldest, now)
            sent += 1
        if sent:
            self._resent_this_round = True
            with self._state:
                self._resent += sent
            logger.warning(
                "publisher %s: no receipt %.0fs after the broker acknowledged them: "
                "sending %d packs again (from seq %d)",
                self.options.gateway_id,
                timeout,
                sent,
                overdue[0],
            )
        if round_over and self._resent_this_round:
            self._resent_this_round = False
            self._resend_timeout = min(
                timeout * 2, max(_RESEND_TIMEOUT_MAX, self.options.receipt_timeout)
            )
        return sent

    def _after_receipt_wait(self, now: float) -> None:
        """Fall back to PUBACK when the platform never sent a receipt (module docstring)."""
        since = self._waiting_since
        if self._mode is not ReceiptMode.WAITING or since is None:
            return
        if now - since < self.options.receipt_fallback:
            return
        with self._state:
            self._mode = ReceiptMode.PUBACK
            awaiting = list(self._awaiting)
            self._awaiting.clear()
            for seq in awaiting:
                self._sent_at.pop(seq, None)
        for seq in awaiting:
            self.outbox.delete(seq)
        logger.warning(
            "publisher %s: no receipt on %s %.0fs after the first PUBACK: the platform seems "
            "not to send receipts (older than them?). Deleting packs on the broker's PUBACK "
            "from now on, so a broker crash may lose what it acknowledged and had not saved",
            self.options.gateway_id,
            self.down_topic,
            self.options.receipt_fallback,
        )

    def _goodbye(self, client: mqtt.Client) -> None:
        """Wait (bounded) for outstanding PUBACKs, say offline, disconnect."""
        deadline = time.monotonic() + self.options.goodbye_timeout
        offline = client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
        while (self._in_flight or not offline.is_published()) and time.monotonic() < deadline:
            if client.loop(_TICK) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
        client.disconnect()  # without a loop thread, paho writes it and closes at once

    def _end_session(self, client: mqtt.Client) -> None:
        sock = client.socket()
        if sock is not None:
            sock.close()
        with self._state:
            self._in_flight.clear()
            self._connected = False
            self._state.notify_all()

    # -- paho callbacks (run inside client.loop() on the publisher thread) -----------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._record_error(f"broker {self._where()} refused the connection: {reason}")
            return
        # MQTT 5 §3.2.2.3.3: never more unacknowledged QoS 1 messages than the broker's Receive
        # Maximum; one of them is the status message below.
        receive_maximum = getattr(properties, "ReceiveMaximum", 65_535)
        self._limit = max(1, min(self.options.window, receive_maximum - 1))
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        if self.options.receipts:
            # Before any pack goes out (the pump runs after this callback), so no receipt for
            # this connection's packs is published before we listen.
            client.subscribe(self.down_topic, qos=1)
        with self._state:
            self._connected = True
            self._connects += 1
            self._state.notify_all()
        logger.info(
            "publisher %s: connected to %s, %d packs waiting",
            self.options.gateway_id,
            self._where(),
            self.outbox.depth(),
        )
        self._kick.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._state:
            self._connected = False
            self._state.notify_all()
        if reason.is_failure and not self._stopping.is_set():
            self._record_error(f"disconnected from {self._where()}: {reason}")

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        seq = self._in_flight.pop(mid, None)
        if seq is None:
            return  # the status message
        self._acked_since_pump = True
        if reason.is_failure:
            # The broker refused the pack (an ACL, a quota): keep it, so nothing is lost; it is
            # sent again, still in order, at the next connection.
            with self._state:
                self._refused_by_broker += 1
            self._record_error(f"broker refused pack {seq}: {reason}", logging.ERROR)
            return
        with self._state:
            self._acknowledged += 1
            self._last_publish_at = time.time()
            if self._mode is not ReceiptMode.PUBACK:
                if seq in self._sent_at:  # not receipted already (a receipt can beat a PUBACK)
                    now = time.monotonic()
                    self._awaiting[seq] = now
                    if self._waiting_since is None:
                        self._waiting_since = now
                self._state.notify_all()
                return
            self._sent_at.pop(seq, None)
        self.outbox.delete(seq)
        with self._state:
            self._state.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.down_topic:
            return
        try:
            receipt = decode_receipt(bytes(message.payload))
        except ReceiptError as exc:
            self._record_error(f"malformed message on {message.topic}: {exc.reason}")
            return
        if receipt is None:
            logger.info(
                "publisher %s: ignoring a down message of another kind", self.options.gateway_id
            )
            return
        if receipt.stream != self.outbox.stream:
            # A receipt for this gateway's previous outbox file: its packs are gone already.
            logger.info(
                "publisher %s: receipt for stream %s, not ours",
                self.options.gateway_id,
                receipt.stream,
            )
            return
        deleted = sum(self.outbox.delete_range(lo, hi) for lo, hi in receipt.ranges)
        now = time.monotonic()
        with self._state:
            if self._mode is not ReceiptMode.RECEIPTS:
                if self._mode is ReceiptMode.PUBACK:
                    logger.warning(
                        "publisher %s: receipts arrive again: keeping packs until their receipt",
                        self.options.gateway_id,
                    )
                self._mode = ReceiptMode.RECEIPTS
            # The platform is back (or never left): resends return to their first pace.
            self._resend_timeout = self.options.receipt_timeout
            self._resent_this_round = False
            newest: float | None = None
            for seq in _receipted(receipt, self._sent_at):
                newest = self._sent_at.pop(seq)
                self._awaiting.pop(seq, None)
            if newest is not None:
                self._receipt_lag = now - newest
            self._receipted += deleted
            self._last_receipt_at = time.time()
            self._state.notify_all()

    def _record_error(self, message: str, level: int = logging.WARNING) -> None:
        logger.log(level, "publisher %s: %s", self.options.gateway_id, message)
        with self._state:
            self._last_error = message
            self._last_error_at = time.time()
            self._state.notify_all()


def _receipted(receipt: Receipt, sent: dict[int, float]) -> list[int]:
    """The seqs of ``sent`` that ``receipt`` names, ascending, walking the smaller side: a
    receipt covers a batch's packs, ``sent`` up to a whole replayed outbox."""
    if sum(hi - lo + 1 for lo, hi in receipt.ranges) <= len(sent):
        return [seq for seq in receipt.seqs() if seq in sent]
    lows = [lo for lo, _ in receipt.ranges]
    found: list[int] = []
    for seq in sent:
        at = bisect.bisect_right(lows, seq) - 1
        if at >= 0 and seq <= receipt.ranges[at][1]:
            found.append(seq)
    found.sort()
    return found
