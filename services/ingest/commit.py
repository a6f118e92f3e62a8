"""The commit: one prepared batch into the database in one transaction, retried while it is away.

In one transaction, in this order: the batch's numbered packs are claimed in the pack ledger
(``services.storage.ledger``: a pack already there, a redelivery or a gateway's resend, writes
nothing), its quarantine items are stored, its pending sensors and gateway statuses go to the
registry, and its readings are written (``services.storage.writer``: a direct COPY, falling back
to staging + ON CONFLICT when the key refuses it). Readings go last because writing them takes
the events lock, which serialises every producer until the commit. A reading whose key is
already stored with another value (a conflict) is kept out and its message's quarantine item is
stored again with a ``conflict`` entry.

While the database is away (``psycopg.OperationalError``) the batch is retried on a new
connection with the one policy of ``retry.py``; nothing is acknowledged meanwhile, so the broker
holds the rest. When PostgreSQL refuses the batch for another reason (something validation did
not foresee), it is written again message by message and only the message refused again is
quarantined, whole, with the error. A crash before the commit loses nothing (the broker
redelivers) and one after it doubles nothing (the ledger, and readings keyed on
(sensor, quantity, time)).

The caller (``worker.py``) acknowledges and sends receipts after :meth:`Committer.store`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import psycopg

from services.storage import ledger, registry
from services.storage import quarantine as quarantine_store
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter, WriteResult

from .decode import GatewayStatus, PendingSensor, Prepared, refused_by_storage, with_conflicts
from .metrics import IngestMetrics, Stats
from .quarantine import Quarantined
from .retry import StoppedError, retry
from .session import Message
from .validate import Reason

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(slots=True)
class Batch:
    """A batch with what decoding made of it, and its numbered packs committed so far."""

    messages: list[Message] = field(default_factory=list)
    records: int = 0
    decoded: Prepared = field(default_factory=Prepared)
    # Numbered packs committed (stored now or before): (gateway id, stream) -> seqs.
    done: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    # Messages committed one by one so far, after PostgreSQL refused the batch whole: an
    # outage midway resumes after them instead of writing (and receipting) them again.
    committed_each: int = 0


def connect(
    database_url: str,
    stop: threading.Event,
    on_error: Callable[[psycopg.OperationalError], None],
) -> Conn | None:
    """A new connection, retried until it comes; None when asked to stop first."""
    if stop.is_set():
        return None
    try:
        return retry(
            lambda: psycopg.connect(libpq_url(database_url), connect_timeout=5),
            stop=stop,
            what="database unreachable",
            on_error=on_error,
        )
    except StoppedError:
        return None


def reconnect(
    old: Conn,
    database_url: str,
    stop: threading.Event,
    on_error: Callable[[psycopg.OperationalError], None],
) -> Conn:
    """A new connection in place of ``old`` (closed); StoppedError if asked to stop first."""
    new = connect(database_url, stop, on_error)
    if new is None:
        raise StoppedError
    old.close()
    return new


class Committer:
    """Writes batches on its own connection (one thread), replaced after an outage."""

    def __init__(
        self,
        conn: Conn,
        mode: str,
        *,
        database_url: str,
        on_error: Callable[[psycopg.OperationalError], None],
        stats: Stats,
        metrics: IngestMetrics,
        max_entries_per_message: int,
        live_events: bool = True,
        direct_copy: bool = True,
    ) -> None:
        self.conn = conn
        self.database_url = database_url
        self.on_error = on_error  # counts each OperationalError
        self.stats = stats
        self.metrics = metrics
        self.max_entries = max_entries_per_message
        self.live_events = live_events
        self.direct_copy = direct_copy
        self.writer = self._writer(conn, mode)

    def _writer(self, conn: Conn, mode: str) -> ReadingWriter:
        return ReadingWriter(conn, mode, live_events=self.live_events, direct=self.direct_copy)

    def close(self) -> None:
        self.conn.close()

    def store(self, batch: Batch, stop: threading.Event) -> None:
        """Write ``batch`` and commit, retrying while the database is away (StoppedError if
        asked to stop meanwhile)."""
        whole = True

        def attempt() -> None:
            nonlocal whole
            started = time.perf_counter()
            try:
                if whole:
                    self._write(batch)
                else:
                    self._write_each(batch)
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                # Not the database being away but something in the batch that PostgreSQL
                # refuses and validation did not foresee. Retrying as is would loop forever:
                # write it again message by message, quarantining only what is refused.
                self.conn.rollback()
                if not whole:
                    raise
                log.exception("batch refused by the database; writing it message by message")
                whole = False
                started = time.perf_counter()
                self._write_each(batch)
            self.metrics.flush_seconds.observe(time.perf_counter() - started)

        def recover() -> None:
            self.conn = reconnect(self.conn, self.database_url, stop, self.on_error)
            self.writer = self._writer(self.conn, storage_mode(self.conn))

        # The database is away: keep the batch, hold the broker off, try again.
        retry(attempt, stop=stop, what="database error", on_error=self.on_error, recover=recover)

    def _write(self, batch: Batch) -> None:
        """The whole batch in one transaction."""
        self._write_part(batch, range(len(batch.messages)), with_registry=True)
        self.stats.batches += 1

    def _write_each(self, batch: Batch) -> None:
        """Message by message, after PostgreSQL refused the batch: only the message it refuses
        again goes to quarantine, whole, with the error; the others are stored."""
        conn = self.conn
        for index in range(batch.committed_each, len(batch.messages)):
            message, one = batch.messages[index], range(index, index + 1)
            try:
                self._write_part(batch, one, with_registry=False)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                conn.rollback()
                log.warning("message on %s refused by the database: %s", message.topic, exc)
                gateway_id = batch.decoded.gateway_ids[index]
                replayed = claim(batch.decoded, conn, one)
                if not replayed:
                    quarantine_store.store(conn, [refused_by_storage(message, gateway_id, exc)])
                conn.commit()
                done(batch, one)
                self.metrics.quarantined.labels(Reason.STORAGE_ERROR.value).inc()
            batch.committed_each = index + 1
        # The batch's pending sensors and gateway statuses on their own: no one message's
        # refusal drops them, and their refusal quarantines no message.
        try:
            update_registry(conn, batch.decoded.pending, batch.decoded.status)
            conn.commit()
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            conn.rollback()
            log.exception("the batch's registry updates (pending sensors, gateway status) refused")
        self.stats.messages += len(batch.messages)
        self.stats.batches += 1

    def _write_part(self, batch: Batch, messages: range, *, with_registry: bool) -> None:
        """Write the batch's ``messages`` and commit, with the batch's gateway statuses and
        pending sensors when ``with_registry``.

        The readings go last: writing them takes the events lock (``services.storage.events``),
        which serialises every producer until this commit, so whatever does not depend on the
        write (ledger, quarantine, registry) is done before it. Only conflicts, found by the
        write, are handled under the lock (rare: a key stored with another value)."""
        conn, writer, decoded = self.conn, self.writer, batch.decoded
        replayed = claim(decoded, conn, messages)
        kept: Sequence[int] = messages
        if replayed:
            kept = [n for n in messages if n not in replayed]
        rows, extras, items = decoded.part(kept)
        item_ids = quarantine_store.store_ids(conn, items)
        if with_registry:
            update_registry(conn, decoded.pending, decoded.status)
        direct, fallback = writer.direct_batches, writer.fallback_batches
        try:
            written = writer.write(rows, extras)
        finally:
            # Counted even when the transaction fails later: each was a COPY attempt.
            self.metrics.direct_batches.inc(writer.direct_batches - direct)
            self.metrics.fallback_batches.inc(writer.fallback_batches - fallback)
        if written.conflicts:
            items = replace_with_conflicts(
                batch,
                conn=conn,
                kept=kept,
                items=items,
                item_ids=item_ids,
                written=written,
                max_entries=self.max_entries,
            )
        conn.commit()
        done(batch, messages)
        self._count(batch, written, items, len(replayed), whole=with_registry)

    def _count(
        self,
        batch: Batch,
        written: WriteResult,
        items: list[Quarantined],
        replayed: int,
        *,
        whole: bool,
    ) -> None:
        stats, metrics = self.stats, self.metrics
        stats.packs_replayed += replayed
        metrics.packs_replayed.inc(replayed)
        if whole:  # (message by message, _write_each counts them at its end)
            stats.messages += len(batch.messages)
        quarantined = sum(len(item.entries) for item in items)
        stats.stored += written.inserted
        stats.duplicates += written.duplicates
        stats.conflicts += len(written.conflicts)
        stats.quarantined += quarantined
        metrics.stored.inc(written.inserted)
        metrics.duplicates.inc(written.duplicates)
        metrics.conflicts.inc(len(written.conflicts))
        metrics.batch_records.observe(written.received)
        for item in items:
            for entry in item.entries:
                metrics.quarantined.labels(entry.reason).inc()


def replace_with_conflicts(
    batch: Batch,
    *,
    conn: Conn,
    kept: Sequence[int],
    items: list[Quarantined],
    item_ids: list[int],
    written: WriteResult,
    max_entries: int,
) -> list[Quarantined]:
    """Store again, with their conflict entries, the items of the messages whose readings
    the key refused; return the batch part's items as they now stand."""
    decoded = batch.decoded
    replaced = with_conflicts(
        decoded, batch.messages, kept, written.conflicts, max_entries=max_entries
    )
    wanted = set(kept)
    numbers = [n for n in decoded.quarantined_message if n in wanted]  # parallel to items
    quarantine_store.remove(
        conn, [i for i, n in zip(item_ids, numbers, strict=True) if n in replaced]
    )
    new = list(replaced.values())
    quarantine_store.store(conn, new)
    return [i for i, n in zip(items, numbers, strict=True) if n not in replaced] + new


def update_registry(conn: Conn, pending: set[PendingSensor], status: list[GatewayStatus]) -> None:
    registry.add_pending_sensors(conn, pending)
    registry.record_gateway_status(conn, status)


def claim(decoded: Prepared, conn: Conn, messages: Iterable[int]) -> set[int]:
    """Claim the numbered packs among ``messages`` in the ledger; return the numbers of those
    stored before (a message twice in one batch counts once: its first copy is new)."""
    keys: dict[tuple[str, str, int], list[int]] = {}
    oldest: dict[tuple[str, str, int], int] = {}
    for number in messages:
        found = decoded.numbered[number]
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


def done(batch: Batch, messages: Iterable[int]) -> None:
    """Note the numbered packs among ``messages`` as committed, for the batch's receipts."""
    for number in messages:
        found = batch.decoded.numbered[number]
        if found is not None:
            key = (found.gateway_id, found.identity.stream)
            batch.done.setdefault(key, []).append(found.identity.seq)
