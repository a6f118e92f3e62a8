"""The monitor: keeps the current KPI values fresh and evaluates the alert rules, every minute.

One loop per deployment is enough (each step takes an advisory lock, so a second copy only
waits); ``urbanpulse monitor`` runs it alone, ``urbanpulse up`` runs it in a thread. Each round:

1. ``engine.refresh_current``: the current day, month and year of every KPI for every scope,
   into ``kpi_current`` (what the API serves), with a ``kpi`` event per changed value;
2. ``alerts.evaluate``: every enabled rule, raising and clearing alerts with their events.

The freshness bound of what the API serves is therefore the round interval plus the rollups' own
lag (a minute in partition mode). The default rules are installed at start, never overwriting a
city's edits.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from services.monitor.metrics import MonitorMetrics
from services.settings import MonitorSettings
from services.storage.urls import libpq_url

from . import engine
from .alerts.defaults import install_defaults
from .alerts.evaluate import evaluate

log = logging.getLogger(__name__)

# The Monitor class's default: URBANPULSE_MONITOR_EVERY's, without reading the environment.
DEFAULT_EVERY_S = MonitorSettings.defaults().every_s


@dataclass(frozen=True, slots=True)
class Round:
    kpi_changed: int
    raised: int
    cleared: int
    open_alerts: int
    seconds: float


def run_round(
    conn: psycopg.Connection[tuple[object, ...]],
    periods: Sequence[str] = engine.CURRENT_PERIODS,
) -> Round:
    """One round on ``conn`` (committed): ``periods`` of ``kpi_current`` refreshed, then every
    rule evaluated."""
    started = time.perf_counter()
    changed = engine.refresh_current(conn, periods=periods)
    result = evaluate(conn)
    conn.commit()
    return Round(
        len(changed), result.raised, result.cleared, result.open, time.perf_counter() - started
    )


class Monitor:
    """The loop, on its own connection, surviving database outages."""

    def __init__(
        self,
        database_url: str,
        every_s: float = DEFAULT_EVERY_S,
        first_after_s: float = 0.0,
        *,
        first_periods: Sequence[str] | None = None,
        widen_after_s: float = 0.0,
        metrics: MonitorMetrics | None = None,
    ) -> None:
        """``first_periods``: the current periods the rounds refresh at first (and ``wake`` may
        change) until ``widen_after_s`` seconds from now; every one after that."""
        self.database_url = database_url
        self.every_s = every_s
        # A platform starting with its sensors (``urbanpulse up``) waits for the first readings
        # and rollups, or its first round would find every sensor silent.
        self.first_after_s = first_after_s
        # Narrowed while history is still arriving (a month judged on today alone would be
        # false), but never for good: whoever was to widen it may have died on the way.
        self._periods: tuple[str, ...] = tuple(first_periods or engine.CURRENT_PERIODS)
        self._narrow_until = (
            time.monotonic() + widen_after_s if first_periods is not None else -math.inf
        )
        self._widened = False
        self.rounds = 0
        self.last: Round | None = None
        self.metrics = metrics or MonitorMetrics()
        self._wake = threading.Event()

    @property
    def periods(self) -> tuple[str, ...]:
        """The current periods the next round refreshes."""
        if time.monotonic() < self._narrow_until:
            return self._periods
        if not self._widened and set(self._periods) != set(engine.CURRENT_PERIODS):
            self._widened = True
            log.warning(
                "monitor: still on %s when the time given to the history ran out; every current "
                "period from now on",
                ", ".join(self._periods),
            )
        return tuple(engine.CURRENT_PERIODS)

    def wake(self, periods: Sequence[str] | None = None) -> None:
        """Run a round now (the data just became complete), on ``periods`` from now on if given
        (within the time ``widen_after_s`` allows narrowing)."""
        if periods is not None:
            self._periods = tuple(periods)
        self._wake.set()

    def _pause(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds``, or less if woken; True when ``stop`` was set."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, 0.25)):
                self._wake.clear()
                return stop.is_set()
        return True

    def run(self, stop: threading.Event) -> None:
        installed = False
        if self._pause(stop, self.first_after_s):
            return
        while not stop.is_set():
            try:
                with psycopg.connect(libpq_url(self.database_url), connect_timeout=5) as conn:
                    if not installed:
                        install_defaults(conn)
                        conn.commit()
                        installed = True
                    while not stop.is_set():
                        self.last = run_round(conn, self.periods)
                        self.rounds += 1
                        self.metrics.round_done(self.last)
                        log.info(
                            "monitor round: %d KPI values changed, %d alerts raised, %d cleared, "
                            "%d open (%.1f s)",
                            self.last.kpi_changed,
                            self.last.raised,
                            self.last.cleared,
                            self.last.open_alerts,
                            self.last.seconds,
                        )
                        self._pause(stop, max(self.every_s - self.last.seconds, 1.0))
            except psycopg.OperationalError as exc:
                self.metrics.failed("database")
                log.warning("monitor: database unavailable (%s); retrying", exc)
                stop.wait(min(self.every_s, 10.0))
            except Exception:
                # Never let the loop die silently: KPIs and alerts would freeze with no one told.
                self.metrics.failed("round")
                log.exception("monitor round failed; retrying")
                stop.wait(min(self.every_s, 10.0))
