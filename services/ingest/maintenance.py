"""The worker's companion loop: rollup refreshes, partition upkeep and the event log's pruning,
on its own connection.

It runs beside the writer so that the hot path never waits for a refresh. In partition mode it
brings the rollup tables up to the current minute every ``rollup_every_s`` and keeps partitions
created ahead and dropped past retention every ``maintain_every_s``; several workers may all run
it, since the refresh and the partition work each take an advisory lock. In TimescaleDB mode the
extension's policies do both. In both modes it drops live-stream events past their retention
every round, and every ``maintain_every_s`` prunes the quarantine by age and size
(``quarantine.prune``, which sums the stored bytes) and the pack ledger below each gateway's
oldest pack and by age (``ledger.prune``): neither grows fast enough to need more, and every
worker runs this loop. The retention policies (``retention.apply``) are applied at the same
pace, in both modes, in bounded work: at most ``RETENTION_ROWS_PER_ROUND`` rows a round, and a
backlog goes on at the next rollup round rather than the next maintenance, so the minute rollups
never wait behind one long expiry.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import psycopg

from services.storage import events, ledger, partitions, quarantine, retention, rollups
from services.storage.urls import libpq_url

from .metrics import IngestMetrics

log = logging.getLogger(__name__)

# Rows the retention deletes in one round (in committed batches): a few seconds of work at most,
# so the rollup refresh that shares this loop stays on its minute.
RETENTION_ROWS_PER_ROUND = 500_000


class Maintenance:
    def __init__(
        self,
        database_url: str,
        mode: str,
        rollup_every_s: float,
        maintain_every_s: float,
        metrics: IngestMetrics,
        *,
        events_retention_s: float = 3600.0,
        quarantine_retention_s: float = 30 * 86400.0,
        quarantine_max_bytes: int = 1024**3,
        ledger_retention_s: float = 86400.0,
    ) -> None:
        self.database_url = database_url
        self.mode = mode
        self.rollup_every_s = rollup_every_s
        self.maintain_every_s = maintain_every_s
        self.metrics = metrics
        self.events_retention = timedelta(seconds=events_retention_s)
        self.quarantine_retention = timedelta(seconds=quarantine_retention_s)
        self.quarantine_max_bytes = quarantine_max_bytes
        self.ledger_retention = timedelta(seconds=ledger_retention_s)
        self._retention_behind = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _apply_retention(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Bounded per run: what is left waits for the next round. Its failure (in TimescaleDB
        mode the policies' jobs and chunks are their owner's to change, not ingestion's role)
        is logged and leaves the rest of the maintenance on its schedule."""
        try:
            expired = retention.apply(conn, self.mode, max_rows=RETENTION_ROWS_PER_ROUND)
        except psycopg.Error as exc:
            conn.rollback()
            self._retention_behind = False
            log.warning("retention not applied: %s (run `urbanpulse retention apply`)", exc)
            return
        self._retention_behind = not expired.complete
        log.info("retention: %s", expired.as_dict())

    def _run(self) -> None:
        next_maintain = 0.0
        while not self._stop.wait(self.rollup_every_s):
            maintain = time.monotonic() >= next_maintain
            try:
                with psycopg.connect(libpq_url(self.database_url), connect_timeout=5) as conn:
                    if self.mode == "partitioned":
                        started = time.perf_counter()
                        rollups.refresh(conn, self.mode)
                        self.metrics.rollup_refresh_seconds.observe(time.perf_counter() - started)
                    events.prune(conn, self.events_retention)
                    conn.commit()
                    if maintain:
                        pruned = quarantine.prune(
                            conn,
                            retention=self.quarantine_retention,
                            max_bytes=self.quarantine_max_bytes,
                        )
                        conn.commit()
                        self.metrics.quarantine_pruned.inc(pruned)
                        self.metrics.ledger_pruned.inc(ledger.prune(conn, self.ledger_retention))
                        conn.commit()
                    if maintain or self._retention_behind:
                        self._apply_retention(conn)
                if maintain:
                    if self.mode == "partitioned":
                        partitions.maintain(self.database_url)
                    # Only once it all went through: a failure is tried again next round.
                    next_maintain = time.monotonic() + self.maintain_every_s
            except psycopg.Error as exc:
                # The writer's retries report the outage; this loop just tries again later.
                self.metrics.database_errors.inc()
                log.warning("rollup or partition maintenance failed: %s", exc)
            except Exception:
                # Never let the loop die silently: rollups would stop with no one told.
                log.exception("rollup or partition maintenance failed")
