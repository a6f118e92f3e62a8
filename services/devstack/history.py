"""The simulated city's history, written through the history import in processes of their own.

``urbanpulse up`` runs this module (``python -m services.devstack.history``, one process per
core, two at most, each with its share of the days) beside the live city. Over MQTT the week
took two to three minutes: every reading went through the gateways' outboxes, the broker and the
one ingestion worker, sharing a process (and its GIL) with the API, the monitor and the live
simulator. Here the same simulator model generates the same readings
(pure functions of sensor and time) as SenML packs, one JSON line each, and
``services.dataio.importer.import_file`` stores them: the live path's decoding and validation,
the idempotent writer (a reading already stored, by the live run or an earlier start, is counted
as a duplicate, never written twice), the quarantine for anything refused.

The order is what a newcomer looks at: today up to the moment the live run took over (the
first process's), its rollups refreshed, reported as ``today``; then the process's whole days
before it, newest first, each day's rollups refreshed on a second connection while the next is
imported, reported as ``history``. A whole day's file is the same bytes at every start,
so a day imported before is recognised by its import run and skipped.

The job arrives as one JSON line on stdin (so no password shows in the process list); each part
done is one JSON line on stdout. Stdin reaching its end (``up`` stopping, or killed) ends the
process: a batch not committed is rolled back by the server, and the next start imports it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from services.dataio import importer
from services.dataio.sources import Format
from services.ingest.validate import Policy
from services.kpi.engine import period_bounds
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from simulators.city import build_manifest, small_city
from simulators.runner import Pack, Simulation, run

log = logging.getLogger(__name__)

HISTORY_DAYS = 7
"""Whole local days before today: yesterday, this week and the last 7 days are complete."""
_DAY = 86400.0

# How long a refresh waits for a concurrent one on its window (TimescaleDB) before giving up.
_CONCURRENT_REFRESH_WAIT_S = 120.0

Span = tuple[float, float]


def history_start(now: datetime, timezone: str, days: int = HISTORY_DAYS) -> datetime:
    """The local midnight ``days`` whole days before today's (in ``timezone``), in UTC."""
    today, _ = period_bounds("day", now, timezone)
    start, _ = period_bounds("day", today - timedelta(days=days) + timedelta(hours=12), timezone)
    return start


def backfill_plan(now: float, today: float, begins: float) -> tuple[Span, list[Span]]:
    """Today's span ``[max(today, begins), now)`` and the older history down to ``begins`` in
    spans of at most a day, newest first (what a newcomer looks at first arrives first)."""
    first = max(today, begins)
    older: list[Span] = []
    hi = first
    while hi > begins:
        lo = max(begins, hi - _DAY)
        older.append((lo, hi))
        hi = lo
    return (first, now), older


@dataclass(frozen=True, slots=True)
class Job:
    """What the history process writes: the city as registered, and the spans."""

    database_url: str
    seed: int
    installed_at: str  # ISO 8601: the manifest's installation time, as registered
    today: Span
    older: list[Span]
    max_future_s: float
    max_age_s: float

    def json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, line: str) -> Job:
        body = json.loads(line)
        body["today"] = tuple(body["today"])
        body["older"] = [tuple(span) for span in body["older"]]
        return cls(**body)


class _Lines:
    """A sink that keeps packs as JSON lines in memory (a day of the small city is ~9 MB)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def put(self, pack: Pack) -> None:
        self.buffer.write(pack.payload)
        self.buffer.write(b"\n")

    def depth(self) -> int:
        return 0

    def close(self) -> None:
        pass


def simulated_lines(simulation: Simulation, span: Span) -> io.BytesIO:
    """The packs of ``span`` (ticks in ``[lo, hi)``) as a JSON-lines file, at its start."""
    sink = _Lines()
    run(simulation, sink, span[0], span[1])
    sink.buffer.seek(0)
    return sink.buffer


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def import_span(
    conn: psycopg.Connection[Any], simulation: Simulation, span: Span, policy: Policy
) -> importer.ImportResult:
    """Import the simulated readings of ``span``; the rollups are the caller's (one refresh
    per part, not per day)."""
    return importer.import_file(
        conn,
        simulated_lines(simulation, span),
        Format.JSONL,
        source=f"simulated-city_{_iso(span[0])}_{_iso(span[1])}",
        policy=policy,
        refresh=False,
        kpis=False,
    )


class _Refresher:
    """Refreshes the rollups of each imported day on a connection of its own while the next day
    is imported: the refresh is the server's work, the import mostly this process's, so the two
    overlap instead of adding up."""

    def __init__(self, database_url: str, mode: str) -> None:
        self.database_url = database_url
        self.mode = mode
        self.spans: queue.Queue[Span | None] = queue.Queue()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="refresh", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(libpq_url(self.database_url), connect_timeout=10) as conn:
                while (span := self.spans.get()) is not None:
                    _refresh(conn, self.mode, span)
        except BaseException as exc:  # handed to the importing thread by finish()
            self.failure = exc
            while self.spans.get() is not None:  # let finish() return
                pass

    def finish(self) -> None:
        """Wait for every span put; raise what the refresh raised."""
        self.spans.put(None)
        self.thread.join()
        if self.failure is not None:
            raise self.failure


def _refresh(conn: psycopg.Connection[Any], mode: str, span: Span) -> None:
    lo, hi = datetime.fromtimestamp(span[0], UTC), datetime.fromtimestamp(span[1], UTC)
    deadline = time.monotonic() + _CONCURRENT_REFRESH_WAIT_S
    while True:
        try:
            importer.refresh_span(conn, mode, lo, hi)
            conn.commit()
            return
        except psycopg.Error as exc:
            # TimescaleDB refuses a refresh whose window another one is refreshing (the
            # ingestion worker's every minute, a policy job, the other history process) rather
            # than wait for it; it carries no SQLSTATE of its own, only this message.
            conn.rollback()
            if "concurrent refresh" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def write_history(job: Job, say: Callable[[Mapping[str, Any]], None]) -> None:
    """Import today's part, refresh its rollups, ``say`` it; then the older days likewise."""
    manifest = build_manifest(
        small_city(), seed=job.seed, installed_at=datetime.fromisoformat(job.installed_at)
    )
    simulation = Simulation(manifest, seed=job.seed)
    policy = Policy(max_future_s=job.max_future_s, max_age_s=job.max_age_s)
    with psycopg.connect(libpq_url(job.database_url), connect_timeout=10) as conn:
        mode = storage_mode(conn)
        conn.commit()
        parts: list[tuple[str, list[Span]]] = [("today", [job.today]), ("history", job.older)]
        for part, spans in parts:
            started = time.monotonic()
            counts = {"stored": 0, "duplicates": 0, "quarantined": 0, "skipped_days": 0}
            refresher = _Refresher(job.database_url, mode)
            try:
                for span in spans:
                    if span[1] <= span[0]:
                        continue
                    result = import_span(conn, simulation, span, policy)
                    counts["stored"] += result.stored
                    counts["duplicates"] += result.duplicates
                    counts["quarantined"] += result.quarantined
                    counts["skipped_days"] += result.already_done
                    # A day imported before too: cheap when its rollups are current, and they
                    # might not be (a start stopped between its import and its refresh).
                    refresher.spans.put(span)
            finally:
                refresher.finish()
            say({"part": part, **counts, "seconds": round(time.monotonic() - started, 3)})


def _exit_when_stdin_ends() -> None:
    """The parent holds our stdin open for as long as it wants the history: its end (a stop,
    or the parent killed) ends this process at once."""
    sys.stdin.read()
    os._exit(0)


def main() -> None:
    # Ctrl-C at the terminal reaches the whole process group; ``up`` stops us by closing stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="city history: %(message)s")
    job = Job.parse(sys.stdin.readline())
    threading.Thread(target=_exit_when_stdin_ends, daemon=True).start()

    def say(message: Mapping[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    try:
        write_history(job, say)
    except psycopg.Error as exc:
        log.warning("could not write the city's history (%s)", str(exc).strip())
        sys.exit(1)


if __name__ == "__main__":
    main()
