"""The ingestion worker: MQTT in, readings and quarantine out, acknowledged after commit.

Two threads. paho's network thread only puts each message on a bounded queue; when the queue is
full it waits, the broker's in-flight window fills, and the broker holds the rest (it never
buffers without bound here). The writer loop takes up to ``batch_records`` records or
``flush_ms`` worth of messages, decodes and validates them, writes readings and quarantine rows
in one transaction, commits, and only then acknowledges the messages, in the order they came.
A crash at any point before the commit loses nothing (the broker redelivers) and a crash after
it doubles nothing (writes are idempotent on (sensor, quantity, time)).

Numbered packs (``gateway.receipts``: the gateway's outbox stream and sequence in MQTT 5 user
properties) are claimed in the pack ledger (``services.storage.ledger``) in the same
transaction: a pack already there (a redelivery, a gateway's resend) writes nothing. After the
commit, each gateway gets one receipt per flush on its down topic naming the packs now stored,
so it may delete them from its outbox. Unnumbered packs (third-party devices) go as before.

Acknowledgements carry the message id of the connection that received them: after a reconnect
the broker redelivers what was not acknowledged, so messages of an older connection are stored
(idempotently) but never acknowledged with a stale id.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway import topics
from gateway.errors import SenMLError, TopicError
from gateway.limits import MAX_PACK_BYTES, MAX_PACK_RECORDS
from gateway.receipts import PackId, ReceiptError, encode_receipt, pack_id
from services.storage import ledger
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from services.storage.writer import (
    Conflict,
    ExtraReading,
    Reading,
    ReadingWriter,
    conflict_owners,
    time_us,
)

from . import quarantine as quarantine_store
from .maintenance import Maintenance
from .metrics import IngestMetrics
from .quarantine import Quarantined, Rejected, bounded
from .registry import SensorDirectory
from .salvage import decode_salvaging
from .validate import Policy, Reason, Validator

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    database_url: str
    mqtt_url: str
    client_id: str = "urbanpulse-ingest"
    # Shared-subscription group for scale-out: the workers of one group split the stream. None:
    # a plain subscription, which every broker keeps across a restart. Mosquitto before 2.0.19
    # (Debian 12 ships 2.0.11) does not persist shared subscriptions, so after a broker restart
    # messages published before the workers re-subscribe reach no one (measured here).
    group: str | None = None
    batch_records: int = 5000  # flush at this many records...
    flush_ms: float = 50.0  # ...or this long after the first message of a batch
    queue_messages: int = 2000  # bound on messages held in memory
    receive_maximum: int = 1000  # unacknowledged messages the broker may send us
    session_expiry_s: int = 7 * 86400  # the broker keeps our session (and queue) this long
    username: str | None = None
    password: str | None = None
    policy: Policy = field(default_factory=Policy)
    # Add sensors that are not in the registry as "pending" (their readings stay quarantined).
    register_unknown: bool = False
    # Companion maintenance on its own connection: rollups (partition mode) and partitions.
    rollup_every_s: float = 60.0
    maintain_every_s: float = 3600.0
    # Log each batch's new readings for the live stream, kept this long (services.storage.events).
    live_events: bool = True
    events_retention_s: float = 3600.0
    # What one message may cost the quarantine, and how long and how much of it is kept
    # (URBANPULSE_QUARANTINE_*; services/ingest/quarantine.py).
    max_entries_per_message: int = 500
    quarantine_retention_s: float = 30 * 86400.0
    quarantine_max_bytes: int = 1024**3
    # Pack ledger rows older than this go even when the gateway did not move on (issue 15).
    ledger_retention_s: float = 86400.0
    # Publish receipts on ssc/v1/<gateway>/down after each commit (False: an older platform).
    receipts: bool = True
    # COPY each batch straight into readings, falling back to staging + ON CONFLICT when the
    # key refuses it (services/storage/writer.py; bench/bench_write.py measures both).
    direct_copy: bool = True


@dataclass(slots=True)
class _Message:
    connection: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float
    retained: bool = False
    properties: list[tuple[str, str]] | None = None  # MQTT 5 user properties


@dataclass(slots=True)
class Stats:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    database_errors: int = 0
    conflicts: int = 0
    retained_ignored: int = 0
    packs_replayed: int = 0  # numbered packs found in the ledger: nothing written
    receipts: int = 0


class _ShutdownError(Exception):  # control flow, never escapes run()
    """Shutdown was asked for while the database was away: leave the batch unacknowledged."""


@dataclass(slots=True)
class _Batch:
    messages: list[_Message] = field(default_factory=list)
    records: int = 0


@dataclass(slots=True)
class _Prepared:
    """A batch decoded and validated, ready to be written in one transaction."""

    batch: _Batch
    rows: list[Reading] = field(default_factory=list)
    extras: list[ExtraReading] = field(default_factory=list)
    # One item per message with something quarantined, and that message's index in the batch.
    quarantine: list[Quarantined] = field(default_factory=list)
    quarantined_message: list[int] = field(default_factory=list)
    status: list[tuple[str, bool, bool]] = field(default_factory=list)  # id, online, seen now
    pending: set[tuple[str, str]] = field(default_factory=set)  # (sensor id, gateway id)
    # After each message: (rows, extras, quarantine) so far, to write messages one by one.
    ends: list[tuple[int, int, int]] = field(default_factory=list)
    # Per message: (gateway id, identity) of a numbered pack, else None.
    ids: list[tuple[str, PackId] | None] = field(default_factory=list)
    # Numbered packs committed (stored now or before): (gateway id, stream) -> seqs.
    done: dict[tuple[str, str], list[int]] = field(default_factory=dict)


class IngestWorker:
    def __init__(self, config: WorkerConfig, metrics: IngestMetrics | None = None) -> None:
        self.config = config
        self.stats = Stats()
        self.metrics = metrics or IngestMetrics()
        self._queue: queue.Queue[_Message] = queue.Queue(config.queue_messages)
        self._prepared: queue.Queue[_Prepared | None] = queue.Queue(2)
        self._connection = 0  # bumped at every CONNACK
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._client = self._make_client()
        self._validator = Validator(config.policy)
        self._validator_version = -1
        self._retained_logged = False

    # -- MQTT side (paho's network thread) ------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

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
        self._connection += 1
        log.info(
            "connected to %s (session present: %s)", self.config.mqtt_url, flags.session_present
        )
        filters = [topics.UP_FILTER, topics.STATUS_FILTER]
        if self.config.group:
            filters = [topics.shared(self.config.group, f) for f in filters]
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
        self._subscribed.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: object,
        _properties: object,
    ) -> None:
        if self._stop.is_set():
            log.info("disconnected from the broker")
        else:
            log.warning("disconnected from the broker (%s); paho reconnects", reason)

    def _on_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        item = _Message(
            self._connection,
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
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # -- writer side ------------------------------------------------------------------------

    def run(
        self, stop: threading.Event | None = None, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Run until ``stop`` is set; then flush what was taken and disconnect."""
        stop = stop or threading.Event()
        self._connect_mqtt()
        conn = self._connect_database(stop)
        registry_conn = self._connect_database(stop)
        committer: threading.Thread | None = None
        try:
            if conn is None or registry_conn is None:
                return
            mode = storage_mode(conn)
            writer = ReadingWriter(
                conn, mode, live_events=self.config.live_events, direct=self.config.direct_copy
            )
            sensors = SensorDirectory(registry_conn)
            maintenance = Maintenance(
                self.config.database_url,
                mode,
                self.config.rollup_every_s,
                self.config.maintain_every_s,
                self.metrics,
                events_retention_s=self.config.events_retention_s,
                quarantine_retention_s=self.config.quarantine_retention_s,
                quarantine_max_bytes=self.config.quarantine_max_bytes,
                ledger_retention_s=self.config.ledger_retention_s,
            )
            maintenance.start()
            # Decoding and validating batch N+1 (here) overlaps writing batch N (there):
            # psycopg releases the GIL while PostgreSQL works.
            committer = threading.Thread(
                target=self._commit_loop, args=(conn, writer, stop), name="commit", daemon=True
            )
            committer.start()
            conn = None  # the committer owns it now
            if on_ready is not None:
                self._subscribed.wait(10)
                on_ready()
            try:
                while not stop.is_set():
                    batch = self._take_batch(stop)
                    if batch.messages:
                        self._hand_over(self._prepare(batch, sensors, stop), committer)
                # Shutdown: take no more, store and acknowledge what was already received.
                self._stop.set()
                drain = threading.Event()
                while not self._queue.empty():
                    batch = self._take_batch(drain)
                    self._hand_over(self._prepare(batch, sensors, stop), committer)
            finally:
                self._hand_over(None, committer)
                committer.join()
                maintenance.stop()
        except _ShutdownError:
            log.info("stopped while the database was away; the broker keeps the rest")
        finally:
            self._stop.set()
            self._client.disconnect()
            self._client.loop_stop()
            for connection in (conn, registry_conn):
                if connection is not None:
                    connection.close()

    def _connect_mqtt(self) -> None:
        """Start connecting (paho retries in its thread): a persistent MQTT 5 session."""
        url = urlsplit(self.config.mqtt_url)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.config.session_expiry_s
        properties.ReceiveMaximum = self.config.receive_maximum
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

    def _hand_over(self, prepared: _Prepared | None, committer: threading.Thread) -> None:
        # Bounded (two batches): when the database is behind, this waits, the message queue
        # fills, and the broker holds the rest.
        while committer.is_alive():
            try:
                self._prepared.put(prepared, timeout=0.2)
                return
            except queue.Full:
                continue
        if prepared is not None:
            raise _ShutdownError

    def _commit_loop(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        writer: ReadingWriter,
        stop: threading.Event,
    ) -> None:
        try:
            while (prepared := self._prepared.get()) is not None:
                conn, writer = self._store(prepared, conn, writer, stop)
        except _ShutdownError:
            log.info("stopped while the database was away; the broker keeps the rest")
        finally:
            conn.close()

    def _take_batch(self, stop: threading.Event) -> _Batch:
        batch = _Batch()
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return batch
        batch.messages.append(first)
        batch.records += max(1, first.payload.count(b"{"))
        deadline = time.monotonic() + self.config.flush_ms / 1000
        while batch.records < self.config.batch_records and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            batch.messages.append(message)
            batch.records += max(1, message.payload.count(b"{"))
        return batch

    def _store(
        self,
        prepared: _Prepared,
        conn: psycopg.Connection[tuple[object, ...]],
        writer: ReadingWriter,
        stop: threading.Event,
    ) -> tuple[psycopg.Connection[tuple[object, ...]], ReadingWriter]:
        delay = 0.5
        whole = True
        while True:
            try:
                started = time.perf_counter()
                if whole:
                    self._write(prepared, conn, writer)
                else:
                    self._write_each(prepared, conn, writer)
                self.metrics.flush_seconds.observe(time.perf_counter() - started)
                break
            except psycopg.OperationalError as exc:
                # The database is away: keep the batch, hold the broker off, try again.
                self.stats.database_errors += 1
                self.metrics.database_errors.inc()
                log.warning("database error, retrying in %.1fs: %s", delay, exc)
                if stop.wait(delay):
                    raise _ShutdownError from None
                delay = min(delay * 2, 2.0) * (0.8 + 0.4 * random.random())  # noqa: S311
                new = self._connect_database(stop)
                if new is None:
                    raise _ShutdownError from None
                conn.close()
                conn = new
                writer = ReadingWriter(
                    conn,
                    storage_mode(conn),
                    live_events=self.config.live_events,
                    direct=self.config.direct_copy,
                )
            except psycopg.Error:
                # Not the database being away but something in the batch that PostgreSQL
                # refuses and validation did not foresee. Retrying as is would loop forever:
                # write it again message by message, quarantining only what is refused.
                conn.rollback()
                if not whole:
                    raise
                log.exception("batch refused by the database; writing it message by message")
                whole = False
        self._acknowledge(prepared.batch)
        self._send_receipts(prepared)
        return conn, writer

    def _send_receipts(self, prepared: _Prepared) -> None:
        """One receipt per gateway stream for the whole flush, after its commit."""
        if not self.config.receipts:
            return
        for (gateway_id, stream), seqs in prepared.done.items():
            # QoS 1; a receipt lost anyway only makes the gateway resend, and the ledger
            # answers the copy with another receipt.
            self._client.publish(topics.down_topic(gateway_id), encode_receipt(stream, seqs), 1)
            self.stats.receipts += 1
            self.metrics.receipts_sent.inc()
        prepared.done.clear()

    def _prepare(self, batch: _Batch, sensors: SensorDirectory, stop: threading.Event) -> _Prepared:
        """Decode and validate; retry registry lookups while the database is away."""
        delay = 0.5
        while True:
            try:
                return self._decode_and_validate(batch, sensors)
            except psycopg.OperationalError as exc:
                self.stats.database_errors += 1
                self.metrics.database_errors.inc()
                log.warning("registry lookup failed, retrying in %.1fs: %s", delay, exc)
                if stop.wait(delay):
                    raise _ShutdownError from None
                delay = min(delay * 2, 2.0)
                new = self._connect_database(stop)
                if new is None:
                    raise _ShutdownError from None
                sensors.conn.close()
                sensors.conn = new

    def _decode_and_validate(self, batch: _Batch, sensors: SensorDirectory) -> _Prepared:
        prepared = _Prepared(batch)
        rows, extras = prepared.rows, prepared.extras
        for number, message in enumerate(batch.messages):
            prepared.ids.append(self._pack_id(message))
            item = Quarantined(message.received_at, message.topic, message.payload)
            try:
                self._take_message(message, item, prepared, sensors)
            finally:
                if item.entries:
                    prepared.quarantine.append(item)
                    prepared.quarantined_message.append(number)
                prepared.ends.append((len(rows), len(extras), len(prepared.quarantine)))
        return prepared

    @staticmethod
    def _pack_id(message: _Message) -> tuple[str, PackId] | None:
        if message.retained or not message.properties:
            return None
        try:
            parsed = topics.parse_topic(message.topic)
        except TopicError:
            return None
        if parsed.channel is not topics.Channel.UP:
            return None
        try:
            identity = pack_id(message.properties)
        except ReceiptError as exc:
            # The pack itself may be fine: store it unnumbered (no ledger, no receipt; the
            # gateway resends and the readings key absorbs it) rather than refuse readings.
            log.warning("pack on %s has a malformed identity, taken unnumbered: %s", parsed, exc)
            return None
        return None if identity is None else (parsed.gateway_id, identity)

    def _take_message(
        self,
        message: _Message,
        item: Quarantined,
        prepared: _Prepared,
        sensors: SensorDirectory,
    ) -> None:
        """Decode and validate one message: its rows into ``prepared``, its rejects into
        ``item``, at most ``max_entries_per_message`` of them itemised."""
        entries = item.entries
        try:
            parsed = topics.parse_topic(message.topic)
        except TopicError as exc:
            entries.append(Rejected(None, None, None, Reason.BAD_TOPIC, str(exc)))
            return
        self.metrics.messages.labels(parsed.channel.value).inc()
        gateway_id = parsed.gateway_id
        if parsed.channel == topics.Channel.STATUS:
            text = message.payload.decode("utf-8", "replace").strip().lower()
            if text in ("online", "offline"):
                # A retained status is the broker's memory, not a sign of life.
                prepared.status.append((gateway_id, text == "online", not message.retained))
            else:
                entries.append(
                    Rejected(
                        gateway_id,
                        None,
                        None,
                        Reason.BAD_STATUS,
                        "status must be 'online' or 'offline'",
                    )
                )
            return
        if message.retained:
            # The broker's copy of a pack someone published with the retain flag: it comes
            # again at every (re)subscription, so it is never news (its first, live delivery
            # carried no retain flag and was taken then).
            self._ignore_retained(message)
            return
        size = len(message.payload)
        if size > MAX_PACK_BYTES:
            item.payload, item.size = message.payload[:MAX_PACK_BYTES], size
            entries.append(
                Rejected(
                    gateway_id,
                    None,
                    None,
                    Reason.PACK_TOO_LARGE,
                    f"{size} bytes; a pack may hold {MAX_PACK_BYTES} (the first kept here)",
                )
            )
            return
        try:
            salvaged = decode_salvaging(message.payload, message.received_at)
        except SenMLError as exc:
            entries.append(Rejected(gateway_id, None, exc.index, Reason.NOT_SENML, str(exc)))
            return
        for bad in salvaged.bad:
            entries.append(Rejected(gateway_id, None, bad.index, Reason.NOT_SENML, str(bad.error)))
        records = salvaged.records
        excess: Rejected | None = None
        if len(records) > MAX_PACK_RECORDS:
            first = salvaged.original_index(MAX_PACK_RECORDS)
            excess = Rejected(
                gateway_id,
                None,
                None,
                Reason.TOO_MANY_RECORDS,
                f"{len(records)} records; a pack may hold {MAX_PACK_RECORDS}: those from index "
                f"{first} on ({len(records) - MAX_PACK_RECORDS}) were not looked at",
            )
            records = records[:MAX_PACK_RECORDS]
        sensors.ensure(records)
        if sensors.version != self._validator_version:
            self._validator.clear()
            self._validator_version = sensors.version
        result = self._validator.validate(
            gateway_id, records, sensors.snapshot, message.received_at
        )
        prepared.rows.extend(result.rows)
        prepared.extras.extend(result.extras)
        if self.config.register_unknown:
            prepared.pending.update(
                (r.sensor_id, gateway_id)
                for r in result.rejects
                if r.reason is Reason.UNKNOWN_SENSOR and r.sensor_id is not None
            )
        original_index = salvaged.original_index
        entries.extend(
            Rejected(gateway_id, r.sensor_id, original_index(r.index), r.reason, r.detail)
            for r in result.rejects
        )
        item.entries = bounded(entries, self.config.max_entries_per_message)
        if excess is not None:
            item.entries.append(excess)

    def _ignore_retained(self, message: _Message) -> None:
        self.stats.retained_ignored += 1
        self.metrics.retained_ignored.inc()
        if not self._retained_logged:
            self._retained_logged = True
            log.warning(
                "ignoring a retained message on %s: readings are never retained, and a retained "
                "pack comes again at every subscription (clear it by publishing an empty "
                "retained message there); further ones are counted in "
                "urbanpulse_ingest_retained_ignored",
                message.topic,
            )

    def _write(
        self,
        prepared: _Prepared,
        conn: psycopg.Connection[tuple[object, ...]],
        writer: ReadingWriter,
    ) -> None:
        """The whole batch in one transaction."""
        self._write_part(prepared, conn, writer, range(len(prepared.ends)))
        self.stats.batches += 1

    def _write_each(
        self,
        prepared: _Prepared,
        conn: psycopg.Connection[tuple[object, ...]],
        writer: ReadingWriter,
    ) -> None:
        """Message by message, after PostgreSQL refused the batch: only the message it refuses
        again goes to quarantine, whole, with the error; the others are stored."""
        for index, message in enumerate(prepared.batch.messages):
            try:
                self._write_part(prepared, conn, writer, range(index, index + 1))
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                conn.rollback()
                log.warning("message on %s refused by the database: %s", message.topic, exc)
                gateway_id = None
                with contextlib.suppress(TopicError):
                    gateway_id = topics.parse_topic(message.topic).gateway_id
                refused = Quarantined(message.received_at, message.topic, message.payload)
                refused.entries.append(
                    Rejected(
                        gateway_id,
                        None,
                        None,
                        Reason.STORAGE_ERROR,
                        f"{type(exc).__name__}: {exc}",
                    )
                )
                replayed = self._claim(prepared, conn, range(index, index + 1))
                if not replayed:
                    quarantine_store.store(conn, [refused])
                conn.commit()
                self._done(prepared, range(index, index + 1))
                self.metrics.quarantined.labels(Reason.STORAGE_ERROR.value).inc()
        self.stats.batches += 1

    def _write_part(
        self,
        prepared: _Prepared,
        conn: psycopg.Connection[tuple[object, ...]],
        writer: ReadingWriter,
        messages: range,
    ) -> None:
        """Write the batch's ``messages`` and commit; status and pending sensors go with the
        last message of the batch."""
        ends = prepared.ends
        start = ends[messages.start - 1] if messages.start > 0 else (0, 0, 0)
        end = ends[messages.stop - 1]
        last = messages.stop == len(ends)
        replayed = self._claim(prepared, conn, messages)
        kept: Sequence[int] = messages
        if replayed:
            kept = [n for n in messages if n not in replayed]
            rows, extras, items = self._without(prepared, kept)
        else:
            rows = prepared.rows[start[0] : end[0]]
            extras = prepared.extras[start[1] : end[1]]
            items = prepared.quarantine[start[2] : end[2]]
        direct, fallback = writer.direct_batches, writer.fallback_batches
        try:
            written = writer.write(rows, extras)
        finally:
            # Counted even when the transaction fails later: each was a COPY attempt.
            self.metrics.direct_batches.inc(writer.direct_batches - direct)
            self.metrics.fallback_batches.inc(writer.fallback_batches - fallback)
        if written.conflicts:
            items = self._with_conflicts(prepared, kept, written.conflicts)
        quarantined = quarantine_store.store(conn, items)
        if last:
            for sensor_id, gateway_id in prepared.pending:
                # The gateway only if registered: an unknown gateway must not fail the batch.
                conn.execute(
                    "INSERT INTO sensors (id, kind, domain, gateway_id, status) "
                    "SELECT %s, 'unknown', 'unknown', (SELECT id FROM gateways WHERE id = %s), "
                    "'pending' ON CONFLICT (id) DO NOTHING",
                    (sensor_id, gateway_id),
                )
            for gateway_id, online, live in prepared.status:
                conn.execute(
                    "UPDATE gateways SET online = %s, "
                    "last_seen = CASE WHEN %s THEN now() ELSE last_seen END WHERE id = %s",
                    (online, live, gateway_id),
                )
        conn.commit()
        self._done(prepared, messages)
        self.stats.packs_replayed += len(replayed)
        self.metrics.packs_replayed.inc(len(replayed))
        if last:
            self.stats.messages += len(prepared.batch.messages)
        self.stats.stored += written.inserted
        self.stats.duplicates += written.duplicates
        self.stats.conflicts += len(written.conflicts)
        self.stats.quarantined += quarantined
        metrics = self.metrics
        metrics.stored.inc(written.inserted)
        metrics.duplicates.inc(written.duplicates)
        metrics.conflicts.inc(len(written.conflicts))
        metrics.batch_records.observe(written.received)
        for item in items:
            for entry in item.entries:
                metrics.quarantined.labels(entry.reason).inc()

    @staticmethod
    def _claim(
        prepared: _Prepared, conn: psycopg.Connection[tuple[object, ...]], messages: Iterable[int]
    ) -> set[int]:
        """Claim the numbered packs among ``messages`` in the ledger; return the numbers of those
        stored before (a message twice in one batch counts once: its first copy is new)."""
        keys: dict[tuple[str, str, int], list[int]] = {}
        oldest: dict[tuple[str, str, int], int] = {}
        for number in messages:
            found = prepared.ids[number]
            if found is not None:
                gateway_id, identity = found
                key = (gateway_id, identity.stream, identity.seq)
                keys.setdefault(key, []).append(number)
                oldest[key] = identity.oldest
        if not keys:
            return set()
        new = ledger.claim(conn, [(*key, oldest[key]) for key in keys])
        replayed: set[int] = set()
        for key, numbers in keys.items():
            replayed.update(numbers if key not in new else numbers[1:])
        return replayed

    @staticmethod
    def _done(prepared: _Prepared, messages: Iterable[int]) -> None:
        for number in messages:
            found = prepared.ids[number]
            if found is not None:
                gateway_id, identity = found
                prepared.done.setdefault((gateway_id, identity.stream), []).append(identity.seq)

    @staticmethod
    def _without(
        prepared: _Prepared, kept: Sequence[int]
    ) -> tuple[list[Reading], list[ExtraReading], list[Quarantined]]:
        """The rows, extras and quarantine items of the messages ``kept`` only."""
        ends = prepared.ends
        rows: list[Reading] = []
        extras: list[ExtraReading] = []
        for number in kept:
            first = ends[number - 1] if number > 0 else (0, 0, 0)
            rows.extend(prepared.rows[first[0] : ends[number][0]])
            extras.extend(prepared.extras[first[1] : ends[number][1]])
        wanted = set(kept)
        items = [
            item
            for number, item in zip(prepared.quarantined_message, prepared.quarantine, strict=True)
            if number in wanted
        ]
        return rows, extras, items

    def _with_conflicts(
        self, prepared: _Prepared, messages: Sequence[int], conflicts: tuple[Conflict, ...]
    ) -> list[Quarantined]:
        """The quarantine items of ``messages`` with a ``conflict`` entry for each refused
        reading, under the message that carried it (new items: ``prepared`` stays as it was,
        should this transaction be retried).

        Only on this rare path is a message decoded again, to name the record's index."""
        ends = prepared.ends

        def carriers() -> Iterator[tuple[int, list[Reading], list[ExtraReading]]]:
            for number in messages:
                first = ends[number - 1] if number > 0 else (0, 0, 0)
                rows = prepared.rows[first[0] : ends[number][0]]
                yield number, rows, prepared.extras[first[1] : ends[number][1]]

        found = conflict_owners(conflicts, carriers())
        wanted = set(messages)
        by_message = dict(zip(prepared.quarantined_message, prepared.quarantine, strict=True))
        result = [i for n, i in by_message.items() if n in wanted and n not in found]
        limit = self.config.max_entries_per_message
        for number, refused in found.items():
            message = prepared.batch.messages[number]
            old = by_message.get(number)
            item = Quarantined(message.received_at, message.topic, message.payload)
            earlier = old.entries if old else []
            # One bound over the message's entries old and new (``bounded`` folds an earlier
            # summary into its own); the records past MAX_PACK_RECORDS stay outside it, as
            # when the message was first taken apart.
            excess = [e for e in earlier if e.reason == Reason.TOO_MANY_RECORDS]
            joined = [e for e in earlier if e.reason != Reason.TOO_MANY_RECORDS]
            joined.extend(self._conflict_entries(message, refused))
            item.entries = [*bounded(joined, limit), *excess]
            result.append(item)
        return result

    def _conflict_entries(self, message: _Message, conflicts: list[Conflict]) -> list[Rejected]:
        gateway_id = topics.parse_topic(message.topic).gateway_id
        indexes: dict[tuple[str, int], int] = {}
        with contextlib.suppress(SenMLError):
            salvaged = decode_salvaging(message.payload, message.received_at)
            for position, record in enumerate(salvaged.records):
                indexes.setdefault(
                    (record.name, time_us(record.time)), salvaged.original_index(position)
                )
        return [
            Rejected(
                gateway_id,
                c.sensor_id,
                indexes.get((f"{c.sensor_id}/{c.quantity}", c.time_us)),
                Reason.CONFLICT,
                f"{c.sensor_id}/{c.quantity} at {_iso(c.time_us)} is stored with "
                f"{_shown(c.stored)}; this message says {_shown(c.received)}. The stored value "
                "stays: an operator decides",
            )
            for c in conflicts
        ]

    def _acknowledge(self, batch: _Batch) -> None:
        current = self._connection
        now = time.time()
        lag = self.metrics.ack_lag_seconds
        for message in batch.messages:
            if message.connection == current and message.qos > 0:
                self._client.ack(message.mid, message.qos)
            lag.observe(now - message.received_at)
        self.metrics.queue_depth.set(self._queue.qsize())

    def _connect_database(
        self, stop: threading.Event
    ) -> psycopg.Connection[tuple[object, ...]] | None:
        delay = 0.5
        while not stop.is_set():
            try:
                return psycopg.connect(libpq_url(self.config.database_url), connect_timeout=5)
            except psycopg.OperationalError as exc:
                self.stats.database_errors += 1
                self.metrics.database_errors.inc()
                log.warning("database unreachable, retrying in %.1fs: %s", delay, exc)
                stop.wait(delay)
                delay = min(delay * 2, 2.0)
        return None


def _iso(microseconds: int) -> str:
    return datetime.fromtimestamp(microseconds / 1e6, UTC).isoformat(timespec="microseconds")


def _shown(value: object) -> str:
    """A stored or received value for a conflict's detail: a number, or an extra's one field."""
    if isinstance(value, tuple):
        return next((repr(v) for v in value if v is not None), "nothing")
    return repr(value)
