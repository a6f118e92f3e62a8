"""Prometheus metrics of the monitor loop (one registry per loop, so tests may run several in a
process), served by ``urbanpulse monitor --metrics-port`` (``services.metrics_http``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from services.kpi.monitor import Round


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rounds = Counter("urbanpulse_monitor_rounds", "rounds completed", registry=r)
        self.round_seconds = Histogram(
            "urbanpulse_monitor_round_seconds",
            "time of a round (KPI refresh and rule evaluation, committed)",
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
        )
        self.kpi_values_changed = Counter(
            "urbanpulse_monitor_kpi_values_changed",
            "current KPI values computed that differed from the stored ones (each stored, with "
            "an event)",
            registry=r,
        )
        self.alerts_raised = Counter(
            "urbanpulse_monitor_alerts_raised", "alerts raised by rule evaluation", registry=r
        )
        self.alerts_cleared = Counter(
            "urbanpulse_monitor_alerts_cleared", "alerts cleared by rule evaluation", registry=r
        )
        self.alerts_open = Gauge(
            "urbanpulse_monitor_alerts_open", "open alerts after the last round", registry=r
        )
        # database: the connection failed or dropped (the loop reconnects); round: anything
        # else a round raised. Either way the KPIs the API serves stop moving until it recovers.
        self.errors = Counter(
            "urbanpulse_monitor_errors", "failed rounds, by kind", ["kind"], registry=r
        )
        for kind in ("database", "round"):
            self.errors.labels(kind)
        self.last_success = Gauge(
            "urbanpulse_monitor_last_success_timestamp_seconds",
            "Unix time of the last round that completed (alert when it is older than a few "
            "intervals)",
            registry=r,
        )

    def round_done(self, result: Round) -> None:
        self.rounds.inc()
        self.round_seconds.observe(result.seconds)
        self.kpi_values_changed.inc(result.kpi_changed)
        self.alerts_raised.inc(result.raised)
        self.alerts_cleared.inc(result.cleared)
        self.alerts_open.set(result.open_alerts)
        self.last_success.set(time.time())

    def failed(self, kind: str) -> None:
        self.errors.labels(kind).inc()
