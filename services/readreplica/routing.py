"""Whether the API reads from its replica: a pure decision on the standby's state, and a gate
that refreshes that state in a background thread so no request waits for the check.

A standby past ``URBANPULSE_DATABASE_READ_MAX_LAG`` or not answering sends reads to the primary:
an operator would rather get fresh answers from a busier primary than stale ones quickly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg

from services.storage.urls import libpq_url

from .lag import StandbyState, standby_state

# How often the gate asks the standby: a standby that fell behind or went away is left within
# about this long (requests in between may wait for the pool's timeout and get a 503).
REFRESH_S = 1.0
CONNECT_TIMEOUT_S = 2  # libpq's connect_timeout is whole seconds


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    use_replica: bool
    state: StandbyState | None  # None: the standby did not answer
    detail: str


def usable(state: StandbyState, max_lag_s: float) -> bool:
    """Whether answers from this standby are fresh enough. One that has replayed all it received
    is current however old its last replayed commit (an idle primary commits nothing)."""
    if not state.in_recovery or state.caught_up:
        return True
    return state.lag_s is not None and state.lag_s <= max_lag_s


def report(state: StandbyState | None, max_lag_s: float, error: str | None = None) -> ReplicaReport:
    if state is None:
        return ReplicaReport(False, None, f"unreachable: {error}; reads on the primary")
    use = usable(state, max_lag_s)
    if not state.in_recovery:
        lag = "not in recovery (a primary)"
    elif state.caught_up:
        lag = "caught up"
    elif state.lag_s is None:
        lag = "replay lag unknown"
    else:
        lag = f"replay lag {state.lag_s:.1f} s"
    where = "reads on the replica" if use else "reads on the primary"
    return ReplicaReport(use, state, f"{lag} (max {max_lag_s:g} s); {where}")


def check(url: str, max_lag_s: float) -> ReplicaReport:
    """Ask the standby now, with a fresh connection (a pool would hide that it went away)."""
    try:
        with psycopg.connect(
            libpq_url(url),
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=True,
            application_name="urbanpulse-api-replica-check",
        ) as conn:
            return report(standby_state(conn), max_lag_s)
    except psycopg.Error as exc:
        return report(None, max_lag_s, type(exc).__name__)


class ReplicaGate:
    """The latest report on the standby, refreshed every :data:`REFRESH_S` by a daemon thread.
    Until the first check has answered, reads go to the primary."""

    def __init__(self, url: str, max_lag_s: float, refresh_s: float = REFRESH_S) -> None:
        self.url = url
        self.max_lag_s = max_lag_s
        self._refresh_s = refresh_s
        self._latest = ReplicaReport(False, None, "not checked yet; reads on the primary")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def use_replica(self) -> bool:
        return self._latest.use_replica

    @property
    def latest(self) -> ReplicaReport:
        return self._latest

    def refresh(self) -> ReplicaReport:
        self._latest = check(self.url, self.max_lag_s)
        return self._latest

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                self.refresh()
                self._stop.wait(self._refresh_s)

        self._thread = threading.Thread(target=run, name="urbanpulse-replica-gate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CONNECT_TIMEOUT_S + 1)
