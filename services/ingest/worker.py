"""The ingestion worker: MQTT in, readings and quarantine out, acknowledged after commit.

Three threads. paho's network thread only puts each message on a bounded queue; when the queue
is full it waits, the broker's in-flight window fills, and the broker holds the rest (it never
buffers without bound here). The main loop decodes and validates each message as it comes
(``decode.py``, the pure core) into the next batch, and hands the batch to the committer as soon
as the committer is free (or when it holds ``batch_records`` records): an idle worker writes a
message at once, a busy one writes whatever came while it was busy in one transaction, so the
batch grows with the load instead of waiting a fixed time. The committer writes readings and
quarantine rows in one transaction, commits, and only then acknowledges the messages, in the
order they came. While the database is away each step retries with one policy (``retry.py``).
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
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway import topics
from gateway.receipts import encode_receipt
from services.storage import ledger, registry
from services.storage import quarantine as quarantine_store
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter, WriteResult

from .decode import (
    GatewayStatus,
    PendingSensor,
    Prepared,
    add_message,
    open_message,
    refused_by_storage,
    with_conflicts,
)
from .maintenance import Maintenance
from .metrics import IngestMetrics
from .quarantine import Quarantined
from .retry import StoppedError, retry
from .sensor_directory import SensorDirectory
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
    # A batch goes to the committer as soon as it is free, or at this many records (a cap
    # reached only under load: bench_ingest measured 20,000 about 20 % faster than 5,000 end to
    # end, the per-transaction round trips and fsync spread over more rows)...
    batch_records: int = 20_000
    # ...and, while messages keep coming, at most this long after its first message once the
    # committer is free (a batch is otherwise handed over when the queue is drained).
    flush_ms: float = 50.0
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


@dataclass(slots=True)
class _Batch:
    messages: list[_Message] = field(default_factory=list)
    records: int = 0


@dataclass(slots=True)
class _Prepared:
    """A batch with what decoding made of it, and its numbered packs committed so far."""

    batch: _Batch
    decoded: Prepared
    # Numbered packs committed (stored now or before): (gateway id, stream) -> seqs.
    done: dict[tuple[str, str], list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Session:
    """The committer's connection and its writer, both replaced after an outage."""

    conn: psycopg.Connection[tuple[object, ...]]
    writer: ReadingWriter


class IngestWorker:
    def __init__(self, config: WorkerConfig, metrics: IngestMetrics | None = None) -> None:
        self.config = config
        self.stats = Stats()
        self.metrics = metrics or IngestMetrics()
        # None on the message queue: the committer is waiting for work (see ``_commit_loop``).
        self._queue: queue.Queue[_Message | None] = queue.Queue(config.queue_messages)
        self._prepared: queue.Queue[_Prepared | None] = queue.Queue(1)
        self._committer_idle = threading.Event()
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
                self._batch_loop(sensors, committer, stop)
            finally:
                self._hand_over(None, committer)
                committer.join()
                maintenance.stop()
        except StoppedError:
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

    def _batch_loop(
        self, sensors: SensorDirectory, committer: threading.Thread, stop: threading.Event
    ) -> None:
        """Decode and validate each message as it comes into the next batch; hand the batch
        over when the committer is free (or the batch is full). On ``stop``, take no more and
        store (and acknowledge) what was already received."""
        prepared = _Prepared(_Batch(), Prepared())
        first_at = 0.0
        while not stop.is_set():
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                message = None
            if message is not None:
                if not prepared.batch.messages:
                    first_at = time.monotonic()
                self._add(prepared, message, sensors, stop)
            if self._ready(prepared.batch, first_at):
                self._hand_over(prepared, committer)
                prepared = _Prepared(_Batch(), Prepared())
        self._stop.set()
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message is not None:
                self._add(prepared, message, sensors, stop)
                if prepared.batch.records >= self.config.batch_records:
                    self._hand_over(prepared, committer)
                    prepared = _Prepared(_Batch(), Prepared())
        if prepared.batch.messages:
            self._hand_over(prepared, committer)

    def _ready(self, batch: _Batch, first_at: float) -> bool:
        """Whether to hand ``batch`` over now: full, or the committer waits for it and nothing
        more is queued (or the queue has kept it growing for ``flush_ms``)."""
        if not batch.messages:
            return False
        if batch.records >= self.config.batch_records:
            return True
        return self._committer_idle.is_set() and (
            self._queue.empty() or time.monotonic() - first_at >= self.config.flush_ms / 1000
        )

    def _hand_over(self, prepared: _Prepared | None, committer: threading.Thread) -> None:
        # Bounded (one batch waiting): when the database is behind, this waits, the message
        # queue fills, and the broker holds the rest.
        self._committer_idle.clear()  # taken now: the next batch grows until it is free again
        while committer.is_alive():
            try:
                self._prepared.put(prepared, timeout=0.2)
                return
            except queue.Full:
                continue
        if prepared is not None:
            raise StoppedError

    def _commit_loop(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        writer: ReadingWriter,
        stop: threading.Event,
    ) -> None:
        try:
            while True:
                # Free: tell the batch loop, waking it if it waits for a message.
                self._committer_idle.set()
                with contextlib.suppress(queue.Full):  # full: it is busy and looks anyway
                    self._queue.put_nowait(None)
                if (prepared := self._prepared.get()) is None:
                    break
                conn, writer = self._store(prepared, conn, writer, stop)
        except StoppedError:
            log.info("stopped while the database was away; the broker keeps the rest")
        finally:
            conn.close()

    def _store(
        self,
        prepared: _Prepared,
        conn: psycopg.Connection[tuple[object, ...]],
        writer: ReadingWriter,
        stop: threading.Event,
    ) -> tuple[psycopg.Connection[tuple[object, ...]], ReadingWriter]:
        """Write a batch, retrying while the database is away; then acknowledge and receipt."""
        session = _Session(conn, writer)
        whole = True

        def attempt() -> None:
            nonlocal whole
            started = time.perf_counter()
            try:
                if whole:
                    self._write(prepared, session.conn, session.writer)
                else:
                    self._write_each(prepared, session.conn, session.writer)
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                # Not the database being away but something in the batch that PostgreSQL
                # refuses and validation did not foresee. Retrying as is would loop forever:
                # write it again message by message, quarantining only what is refused.
                session.conn.rollback()
                if not whole:
                    raise
                log.exception("batch refused by the database; writing it message by message")
                whole = False
                started = time.perf_counter()
                self._write_each(prepared, session.conn, session.writer)
            self.metrics.flush_seconds.observe(time.perf_counter() - started)

        def reconnect() -> None:
            session.conn = new = self._reconnect(session.conn, stop)
            session.writer = ReadingWriter(
                new,
                storage_mode(new),
                live_events=self.config.live_events,
                direct=self.config.direct_copy,
            )

        # The database is away: keep the batch, hold the broker off, try again.
        retry(
            attempt, stop=stop, what="database error", on_error=self._count_error, recover=reconnect
        )
        self._acknowledge(prepared.batch)
        self._send_receipts(prepared)
        return session.conn, session.writer

    def _count_error(self, _exc: psycopg.OperationalError) -> None:
        self.stats.database_errors += 1
        self.metrics.database_errors.inc()

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

    def _add(
        self,
        prepared: _Prepared,
        message: _Message,
        sensors: SensorDirectory,
        stop: threading.Event,
    ) -> None:
        """Add ``message`` to the batch: decode (``decode.open_message``), top the registry
        snapshot up with its unknown sensors (retried while the database is away), validate
        (``decode.add_message``)."""

        def reconnect() -> None:
            sensors.conn = self._reconnect(sensors.conn, stop)

        batch, decoded = prepared.batch, prepared.decoded
        batch.messages.append(message)
        batch.records += max(1, message.payload.count(b"{"))
        taken = open_message(message)
        if taken.channel is not None:
            self.metrics.messages.labels(taken.channel.value).inc()
        if taken.retained_ignored:
            self._ignore_retained(message)
        if taken.identity_error is not None:
            log.warning(
                "pack on %s has a malformed identity, taken unnumbered: %s",
                message.topic,
                taken.identity_error,
            )
        if taken.pack is not None and taken.pack.salvaged is not None:
            retry(
                sensors.ensure,
                taken.pack.records,
                stop=stop,
                what="registry lookup failed",
                on_error=self._count_error,
                recover=reconnect,
            )
            if sensors.version != self._validator_version:
                self._validator.clear()
                self._validator_version = sensors.version
        add_message(
            decoded,
            taken,
            sensors.snapshot,
            self._validator,
            max_entries=self.config.max_entries_per_message,
            register_unknown=self.config.register_unknown,
        )

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
        self._write_part(prepared, conn, writer, range(len(prepared.batch.messages)))
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
            one = range(index, index + 1)
            try:
                self._write_part(prepared, conn, writer, one)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                conn.rollback()
                log.warning("message on %s refused by the database: %s", message.topic, exc)
                gateway_id = prepared.decoded.gateway_ids[index]
                replayed = self._claim(prepared, conn, one)
                if not replayed:
                    quarantine_store.store(conn, [refused_by_storage(message, gateway_id, exc)])
                conn.commit()
                self._done(prepared, one)
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
        last message of the batch.

        The readings go last: writing them takes the events lock (``services.storage.events``),
        which serialises every producer until this commit, so whatever does not depend on the
        write (ledger, quarantine, registry) is done before it. Only conflicts, found by the
        write, are handled under the lock (rare: a key stored with another value)."""
        decoded = prepared.decoded
        last = messages.stop == len(decoded.ends)
        replayed = self._claim(prepared, conn, messages)
        kept: Sequence[int] = messages
        if replayed:
            kept = [n for n in messages if n not in replayed]
        rows, extras, items = decoded.part(kept)
        item_ids = quarantine_store.store_ids(conn, items)
        if last:
            self._update_registry(conn, decoded.pending, decoded.status)
        direct, fallback = writer.direct_batches, writer.fallback_batches
        try:
            written = writer.write(rows, extras)
        finally:
            # Counted even when the transaction fails later: each was a COPY attempt.
            self.metrics.direct_batches.inc(writer.direct_batches - direct)
            self.metrics.fallback_batches.inc(writer.fallback_batches - fallback)
        if written.conflicts:
            items = self._replace_with_conflicts(
                prepared, conn=conn, kept=kept, items=items, item_ids=item_ids, written=written
            )
        conn.commit()
        self._done(prepared, messages)
        self.stats.packs_replayed += len(replayed)
        self.metrics.packs_replayed.inc(len(replayed))
        if last:
            self.stats.messages += len(prepared.batch.messages)
        quarantined = sum(len(item.entries) for item in items)
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

    def _replace_with_conflicts(
        self,
        prepared: _Prepared,
        *,
        conn: psycopg.Connection[tuple[object, ...]],
        kept: Sequence[int],
        items: list[Quarantined],
        item_ids: list[int],
        written: WriteResult,
    ) -> list[Quarantined]:
        """Store again, with their conflict entries, the items of the messages whose readings
        the key refused; return the batch part's items as they now stand."""
        decoded = prepared.decoded
        replaced = with_conflicts(
            decoded,
            prepared.batch.messages,
            kept,
            written.conflicts,
            max_entries=self.config.max_entries_per_message,
        )
        wanted = set(kept)
        numbers = [n for n in decoded.quarantined_message if n in wanted]  # parallel to items
        quarantine_store.remove(
            conn, [i for i, n in zip(item_ids, numbers, strict=True) if n in replaced]
        )
        new = list(replaced.values())
        quarantine_store.store(conn, new)
        return [i for i, n in zip(items, numbers, strict=True) if n not in replaced] + new

    @staticmethod
    def _update_registry(
        conn: psycopg.Connection[tuple[object, ...]],
        pending: set[PendingSensor],
        status: list[GatewayStatus],
    ) -> None:
        registry.add_pending_sensors(conn, pending)
        registry.record_gateway_status(conn, status)

    @staticmethod
    def _claim(
        prepared: _Prepared, conn: psycopg.Connection[tuple[object, ...]], messages: Iterable[int]
    ) -> set[int]:
        """Claim the numbered packs among ``messages`` in the ledger; return the numbers of those
        stored before (a message twice in one batch counts once: its first copy is new)."""
        keys: dict[tuple[str, str, int], list[int]] = {}
        oldest: dict[tuple[str, str, int], int] = {}
        for number in messages:
            found = prepared.decoded.numbered[number]
            if found is not None:
                identity = found.identity
                key = (found.gateway_id, identity.stream, identity.seq)
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
            found = prepared.decoded.numbered[number]
            if found is not None:
                key = (found.gateway_id, found.identity.stream)
                prepared.done.setdefault(key, []).append(found.identity.seq)

    def _acknowledge(self, batch: _Batch) -> None:
        current = self._connection
        now = time.time()
        lag = self.metrics.ack_lag_seconds
        for message in batch.messages:
            if message.connection == current and message.qos > 0:
                self._client.ack(message.mid, message.qos)
            lag.observe(now - message.received_at)
        self.metrics.queue_depth.set(self._queue.qsize())

    def _reconnect(
        self, old: psycopg.Connection[tuple[object, ...]], stop: threading.Event
    ) -> psycopg.Connection[tuple[object, ...]]:
        """A new connection in place of ``old`` (closed); StoppedError if asked to stop first."""
        new = self._connect_database(stop)
        if new is None:
            raise StoppedError
        old.close()
        return new

    def _connect_database(
        self, stop: threading.Event
    ) -> psycopg.Connection[tuple[object, ...]] | None:
        """A new connection, retried until it comes; None when asked to stop first."""
        if stop.is_set():
            return None
        try:
            return retry(
                lambda: psycopg.connect(libpq_url(self.config.database_url), connect_timeout=5),
                stop=stop,
                what="database unreachable",
                on_error=self._count_error,
            )
        except StoppedError:
            return None
