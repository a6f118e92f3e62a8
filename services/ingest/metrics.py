"""Prometheus metrics of an ingestion worker (one registry per worker, so several can share a
process in tests and each exposes its own), and its plain counters (:class:`Stats`)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(slots=True)
class Stats:
    """A worker's counts as plain numbers (tests and benchmarks read them)."""

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


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "urbanpulse_ingest_messages", "MQTT messages taken", ["channel"], registry=r
        )
        self._messages_by_channel: dict[str, Counter] = {}
        self.stored = Counter(
            "urbanpulse_ingest_records_stored", "records newly stored as readings", registry=r
        )
        self.duplicates = Counter(
            "urbanpulse_ingest_records_duplicate",
            "records already stored (redeliveries, replays)",
            registry=r,
        )
        self.conflicts = Counter(
            "urbanpulse_ingest_records_conflict",
            "records whose key was already stored with another value (kept; this one quarantined)",
            registry=r,
        )
        self.retained_ignored = Counter(
            "urbanpulse_ingest_retained_ignored",
            "retained messages on an up topic, ignored (the broker sends them at every subscribe)",
            registry=r,
        )
        self.quarantine_pruned = Counter(
            "urbanpulse_ingest_quarantine_pruned",
            "quarantined messages dropped by age or size",
            registry=r,
        )
        self.packs_replayed = Counter(
            "urbanpulse_ingest_packs_replayed",
            "numbered packs found in the pack ledger (stored before): nothing written",
            registry=r,
        )
        self.ledger_pruned = Counter(
            "urbanpulse_ingest_ledger_pruned",
            "pack ledger rows dropped (below a gateway's oldest pack, or by age)",
            registry=r,
        )
        self.receipts_sent = Counter(
            "urbanpulse_ingest_receipts_sent",
            "receipts published on gateways' down topics",
            registry=r,
        )
        # Their ratio says whether direct COPY pays: each fallback wrote the batch twice.
        self.direct_batches = Counter(
            "urbanpulse_ingest_direct_batches",
            "batches COPYed straight into readings (direct COPY)",
            registry=r,
        )
        self.fallback_batches = Counter(
            "urbanpulse_ingest_fallback_batches",
            "batches whose direct COPY the key refused, written again through staging",
            registry=r,
        )
        self.quarantined = Counter(
            "urbanpulse_ingest_quarantined",
            "records or messages quarantined",
            ["reason"],
            registry=r,
        )
        self.batch_records = Histogram(
            "urbanpulse_ingest_batch_records",
            "records per committed batch",
            registry=r,
            buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
        )
        self.flush_seconds = Histogram(
            "urbanpulse_ingest_flush_seconds",
            "time to write and commit a batch",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.ack_lag_seconds = Histogram(
            "urbanpulse_ingest_ack_lag_seconds",
            "from receiving a message to acknowledging it",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_depth = Gauge(
            "urbanpulse_ingest_queue_depth", "messages received and not yet written", registry=r
        )
        self.database_errors = Counter(
            "urbanpulse_ingest_database_errors", "failed database operations (retried)", registry=r
        )
        self.rollup_refresh_seconds = Histogram(
            "urbanpulse_ingest_rollup_refresh_seconds", "time of a rollup refresh", registry=r
        )

    def message_taken(self, channel: str) -> None:
        """Count a message on ``channel``: its labelled child is looked up once (``labels()``
        took 4 % of the worker's CPU at packs of one reading, once per message)."""
        child = self._messages_by_channel.get(channel)
        if child is None:
            child = self._messages_by_channel[channel] = self.messages.labels(channel)
        child.inc()
