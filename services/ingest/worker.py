"""The ingestion worker: MQTT in, readings and quarantine out, acknowledged after commit.

The shell that ties the parts together and owns the batching. Three threads:

- the MQTT session's network thread (``session.py``) only puts each message on a bounded
  queue; when the queue is full it waits, the broker's in-flight window fills, and the broker
  holds the rest (nothing is buffered without bound here);
- the batch loop (here, the caller's thread) decodes and validates each message as it comes
  (``decode.py``, the pure core) into the next batch, and hands the batch to the committer as
  soon as it is free (or when it holds ``batch_records`` records): an idle worker writes a
  message at once, a busy one writes whatever came while it was busy in one transaction, so the
  batch grows with the load instead of waiting a fixed time;
- the committer (``commit.py``) writes the batch in one transaction (pack ledger, quarantine,
  registry, readings), retrying while the database is away (``retry.py``), and only then does
  this module acknowledge its messages, in the order they came, and send each gateway one
  receipt naming its numbered packs now stored (``gateway.receipts``), so that it may delete
  them from its outbox. Unnumbered packs (third-party devices) go as before.

Decoding batch N+1 overlaps writing batch N: psycopg releases the GIL while PostgreSQL works.
A crash at any point before the commit loses nothing (the broker redelivers) and a crash after
it doubles nothing (the ledger, and writes idempotent on (sensor, quantity, time)).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from services.settings import IngestSettings
from services.storage.modes import storage_mode

from .commit import Batch, Committer, Conn, connect, reconnect
from .decode import add_message, open_message
from .maintenance import Maintenance
from .metrics import IngestMetrics, Stats
from .retry import StoppedError, retry
from .sensor_directory import SensorDirectory
from .session import Message, MqttSession
from .validate import Policy, Validator

__all__ = ["IngestWorker", "Stats", "WorkerConfig", "WorkerFailedError"]

log = logging.getLogger(__name__)

_TUNED = IngestSettings.defaults()


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
    # A batch goes to the committer as soon as it is free, or at batch_records records, or,
    # while messages keep coming, flush_ms after its first message once the committer is free.
    # The defaults of the tuned fields are the settings' (IngestSettings: the measurements
    # that chose them are there), so a worker built here is tuned as `urbanpulse ingest` is.
    batch_records: int = _TUNED.batch_records
    flush_ms: float = _TUNED.flush_ms
    queue_messages: int = 2000  # bound on messages held in memory
    receive_maximum: int = 1000  # unacknowledged messages the broker may send us
    session_expiry_s: int = 7 * 86400  # the broker keeps our session (and queue) this long
    username: str | None = None
    password: str | None = None
    policy: Policy = field(default_factory=Policy)
    # Add sensors that are not in the registry as "pending" (their readings stay quarantined).
    register_unknown: bool = _TUNED.register_unknown
    # Companion maintenance on its own connection: rollups (partition mode) and partitions.
    rollup_every_s: float = 60.0
    maintain_every_s: float = 3600.0
    # Log each batch's new readings for the live stream, kept this long (services.storage.events).
    live_events: bool = _TUNED.live_events
    events_retention_s: float = _TUNED.events_retention_s
    # What one message may cost the quarantine, and how long and how much of it is kept
    # (URBANPULSE_QUARANTINE_*; services/ingest/quarantine.py).
    max_entries_per_message: int = _TUNED.max_entries_per_message
    quarantine_retention_s: float = _TUNED.quarantine_retention_s
    quarantine_max_bytes: int = _TUNED.quarantine_max_bytes
    # Pack ledger rows older than this go even when the gateway did not move on (issue 15).
    ledger_retention_s: float = _TUNED.ledger_retention_s
    # Publish receipts on ssc/v1/<gateway>/down after each commit (False: an older platform).
    receipts: bool = _TUNED.receipts
    # COPY each batch straight into readings, falling back to staging + ON CONFLICT when the
    # key refuses it (services/storage/writer.py; bench/bench_write.py measures both).
    direct_copy: bool = _TUNED.direct_copy


class WorkerFailedError(RuntimeError):
    """The worker stopped on an error it cannot go on from (its cause is chained)."""


class IngestWorker:
    def __init__(self, config: WorkerConfig, metrics: IngestMetrics | None = None) -> None:
        self.config = config
        self.stats = Stats()
        self.metrics = metrics or IngestMetrics()
        # None on the message queue: the committer is waiting for work (see ``_commit_loop``).
        self._queue: queue.Queue[Message | None] = queue.Queue(config.queue_messages)
        self._batches: queue.Queue[Batch | None] = queue.Queue(1)
        self._committer_idle = threading.Event()
        self._stop = threading.Event()
        self._session = MqttSession(
            url=config.mqtt_url,
            client_id=config.client_id,
            inbox=self._queue,
            closing=self._stop,
            group=config.group,
            session_expiry_s=config.session_expiry_s,
            receive_maximum=config.receive_maximum,
            username=config.username,
            password=config.password,
        )
        self._validator = Validator(config.policy)
        self._validator_version = -1
        # What ended the commit thread other than a stop: run() raises it, so the process exits
        # with an error (and its supervisor restarts it) instead of seeming to stop cleanly.
        self._commit_failure: Exception | None = None
        self._retained_logged = False

    def run(
        self, stop: threading.Event | None = None, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Run until ``stop`` is set; then flush what was taken and disconnect."""
        stop = stop or threading.Event()
        self._session.start()
        conn = self._connect(stop)
        registry_conn = self._connect(stop)
        committer: threading.Thread | None = None
        try:
            if conn is None or registry_conn is None:
                return
            mode = storage_mode(conn)
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
            writes = Committer(
                conn,
                mode,
                database_url=self.config.database_url,
                on_error=self._count_error,
                stats=self.stats,
                metrics=self.metrics,
                max_entries_per_message=self.config.max_entries_per_message,
                live_events=self.config.live_events,
                direct_copy=self.config.direct_copy,
            )
            committer = threading.Thread(
                target=self._commit_loop, args=(writes, stop), name="commit", daemon=True
            )
            committer.start()
            conn = None  # the committer owns it now
            if on_ready is not None:
                self._session.subscribed.wait(10)
                on_ready()
            try:
                self._batch_loop(sensors, committer, stop)
            finally:
                self._hand_over(None, committer)
                committer.join()
                maintenance.stop()
        except StoppedError:
            if self._commit_failure is None:
                log.info("stopped while the database was away; the broker keeps the rest")
        finally:
            self._stop.set()
            self._session.close()
            for connection in (conn, registry_conn):
                if connection is not None:
                    connection.close()
        if self._commit_failure is not None:
            raise WorkerFailedError(
                "the commit thread failed; nothing it held was acknowledged, so the broker "
                "delivers it again"
            ) from self._commit_failure

    def _connect(self, stop: threading.Event) -> Conn | None:
        return connect(self.config.database_url, stop, self._count_error)

    def _count_error(self, _exc: psycopg.OperationalError) -> None:
        self.stats.database_errors += 1
        self.metrics.database_errors.inc()

    # -- the batch loop -------------------------------------------------------------------------

    def _batch_loop(
        self, sensors: SensorDirectory, committer: threading.Thread, stop: threading.Event
    ) -> None:
        """Decode and validate each message as it comes into the next batch; hand the batch
        over when the committer is free (or the batch is full). On ``stop``, take no more and
        store (and acknowledge) what was already received."""
        batch = Batch()
        first_at = 0.0
        while not stop.is_set() and committer.is_alive():  # (it ends only on a failure)
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                message = None
            if message is not None:
                if not batch.messages:
                    first_at = time.monotonic()
                self._add(batch, message, sensors, stop)
            if self._ready(batch, first_at):
                self._hand_over(batch, committer)
                batch = Batch()
        self._stop.set()
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message is not None:
                self._add(batch, message, sensors, stop)
                if batch.records >= self.config.batch_records:
                    self._hand_over(batch, committer)
                    batch = Batch()
        if batch.messages:
            self._hand_over(batch, committer)

    def _ready(self, batch: Batch, first_at: float) -> bool:
        """Whether to hand ``batch`` over now: full, or the committer waits for it and nothing
        more is queued (or the queue has kept it growing for ``flush_ms``)."""
        if not batch.messages:
            return False
        if batch.records >= self.config.batch_records:
            return True
        return self._committer_idle.is_set() and (
            self._queue.empty() or time.monotonic() - first_at >= self.config.flush_ms / 1000
        )

    def _hand_over(self, batch: Batch | None, committer: threading.Thread) -> None:
        # Bounded (one batch waiting): when the database is behind, this waits, the message
        # queue fills, and the broker holds the rest.
        self._committer_idle.clear()  # taken now: the next batch grows until it is free again
        while committer.is_alive():
            try:
                self._batches.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue
        if batch is not None:
            raise StoppedError

    def _add(
        self, batch: Batch, message: Message, sensors: SensorDirectory, stop: threading.Event
    ) -> None:
        """Add ``message`` to the batch: decode (``decode.open_message``), top the registry
        snapshot up with its unknown sensors (retried while the database is away), validate
        (``decode.add_message``)."""

        def recover() -> None:
            url = self.config.database_url
            sensors.conn = reconnect(sensors.conn, url, stop, self._count_error)

        batch.messages.append(message)
        batch.records += max(1, message.payload.count(b"{"))
        taken = open_message(message)
        if taken.channel is not None:
            self.metrics.message_taken(taken.channel.value)
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
                recover=recover,
            )
            if sensors.version != self._validator_version:
                self._validator.clear()
                self._validator_version = sensors.version
        add_message(
            batch.decoded,
            taken,
            sensors.snapshot,
            self._validator,
            max_entries=self.config.max_entries_per_message,
            register_unknown=self.config.register_unknown,
        )

    def _ignore_retained(self, message: Message) -> None:
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

    # -- the committer's thread -----------------------------------------------------------------

    def _commit_loop(self, writes: Committer, stop: threading.Event) -> None:
        try:
            while True:
                # Free: tell the batch loop, waking it if it waits for a message.
                self._committer_idle.set()
                with contextlib.suppress(queue.Full):  # full: it is busy and looks anyway
                    self._queue.put_nowait(None)
                if (batch := self._batches.get()) is None:
                    break
                writes.store(batch, stop)
                self._acknowledge(batch)
                self._send_receipts(batch)
        except StoppedError:
            log.info("stopped while the database was away; the broker keeps the rest")
        except Exception as exc:
            log.exception("the commit thread failed")
            self._commit_failure = exc
        finally:
            writes.close()

    def _acknowledge(self, batch: Batch) -> None:
        self._session.acknowledge(batch.messages)
        now = time.time()
        lag = self.metrics.ack_lag_seconds
        for message in batch.messages:
            lag.observe(now - message.received_at)
        self.metrics.queue_depth.set(self._queue.qsize())

    def _send_receipts(self, batch: Batch) -> None:
        """One receipt per gateway stream for the whole flush, after its commit."""
        if self.config.receipts:
            sent = self._session.send_receipts(batch.done)
            self.stats.receipts += sent
            self.metrics.receipts_sent.inc(sent)
        batch.done.clear()
