"""The simulated city of ``urbanpulse up``: its history plan (a week of whole local days, today
first, newest first), and the city itself on a real database and broker: the week imported,
rolled up and rated once reported, the live run joining it at the seam with nothing missing or
twice, and a restart re-importing what the live run stored without a duplicate or a conflict."""

from __future__ import annotations

import contextlib
import math
import queue
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import psycopg

from services.devstack.city import history_shares, start_city
from services.devstack.history import HISTORY_DAYS, backfill_plan, history_start
from services.kpi import engine
from services.storage.urls import libpq_url
from simulators.city import build_manifest, small_city
from simulators.runner import Simulation
from tests.fixtures.broker import BrokerUnderTest
from tests.services.ingest.conftest import Workers

DAY = 86400.0


def test_the_backfill_covers_seven_whole_days_before_today_today_first() -> None:
    now = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    begins = history_start(now, "UTC")
    assert HISTORY_DAYS >= 7
    assert begins == datetime(2026, 11, 28, tzinfo=UTC)  # yesterday and the 6 days before, whole
    today = datetime(2026, 12, 5, tzinfo=UTC).timestamp()
    first, older = backfill_plan(now.timestamp(), today, begins.timestamp())
    assert first == (today, now.timestamp())  # today first: the live KPIs need it
    assert len(older) == 7
    # Newest first, contiguous, down to the history's start: nothing left out, nothing twice.
    assert older[0][1] == today
    assert all(a[0] == b[1] for a, b in pairwise(older))
    assert older[-1][0] == begins.timestamp()
    assert all(hi - lo == DAY for lo, hi in older)


def test_the_days_are_dealt_to_at_most_two_processes_the_one_with_today_taking_fewer() -> None:
    older = [(float(d - 1), float(d)) for d in range(7, 0, -1)]  # newest first
    assert history_shares(older, processes=1) == [older]
    first, second = history_shares(older, processes=8)
    assert len(first) == 3  # and today
    assert len(second) == 4
    assert second[0] == older[0]  # the newest day starts at once beside today
    assert sorted(first + second) == sorted(older)  # every day once
    assert first == sorted(first, reverse=True)  # newest first in each
    assert second == sorted(second, reverse=True)
    assert history_shares(older[:1], processes=2) == [older[:1]]


def test_the_history_starts_at_the_citys_local_midnight() -> None:
    # Brussels in winter is UTC+1: its midnight is 23:00 UTC the evening before.
    now = datetime(2026, 12, 5, 0, 30, tzinfo=UTC)  # 01:30 local, already Dec 5 there
    begins = history_start(now, "Europe/Brussels")
    assert begins == datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    assert now - begins > timedelta(days=7)


Conn = psycopg.Connection[tuple[object, ...]]
# Generous: the history takes about half a minute on an idle machine, minutes on a busy one.
_WAIT_S = 900.0


def _expected(simulation: Simulation, lo: float, hi: float) -> int:
    """Readings the city generates with times in [lo, hi)."""
    return sum(p.records for p in simulation.packs(math.ceil(lo), math.ceil(hi)))


def _stored(conn: Conn, lo: float, hi: float) -> int:
    row = conn.execute(
        "SELECT count(*) FROM readings WHERE time >= to_timestamp(%s) AND time < to_timestamp(%s)",
        (lo, hi),
    ).fetchone()
    conn.commit()
    assert row is not None
    count = row[0]
    assert isinstance(count, int)
    return count


def _wait_stored(conn: Conn, lo: float, hi: float, expected: int, timeout: float) -> int:
    """What is stored in [lo, hi) once it reaches ``expected`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while (stored := _stored(conn, lo, hi)) != expected and time.monotonic() < deadline:
        time.sleep(1.0)
    return stored


def _start(
    stack: contextlib.ExitStack, database_url: str, broker: BrokerUnderTest, state: Path
) -> tuple[float, float, queue.Queue[str]]:
    """Start the city with an ingestion worker; the seam lies within the returned bounds."""
    workers = Workers(broker)
    stack.callback(workers.stop_all)
    workers.start(database_url)
    parts: queue.Queue[str] = queue.Queue()
    before = time.time()
    start_city(stack, database_url, broker.url, state, on_ready=parts.put)
    return before, time.time(), parts


def test_the_city_starts_with_its_week_imported_rolled_up_and_rated_and_live_from_the_seam(
    database_url: str, mqtt_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    state = tmp_path / "city"
    with psycopg.connect(libpq_url(database_url)) as conn:
        with contextlib.ExitStack() as stack:
            before, after, parts = _start(stack, database_url, mqtt_broker, state)
            now = datetime.fromtimestamp(before, UTC)
            timezone = engine.load_settings(conn).timezone
            begins = history_start(now, timezone)
            today, _ = engine.period_bounds("day", now, timezone)
            assert parts.get(timeout=_WAIT_S) == "today"
            assert parts.get(timeout=_WAIT_S) == "history"

            # Rolled up when reported: every hour and every day of the week, for each sensor.
            hours, days, sensors = conn.execute(
                "SELECT count(DISTINCT h.bucket), count(DISTINCT date_trunc('day', h.bucket)), "
                "count(DISTINCT h.sensor_key) FROM readings_1h h "
                "WHERE h.bucket >= %s AND h.bucket < %s",
                (begins, today),
            ).fetchone() or (0, 0, 0)
            conn.commit()
            manifest = build_manifest(small_city(), installed_at=begins)
            assert (hours, days, sensors) == (
                HISTORY_DAYS * 24,
                HISTORY_DAYS,
                len(manifest.sensors),
            )

            # Each KPI the city has sources for is rated over the week (a day alone might not
            # be: TRA-1 looks at weekday peaks only).
            for kpi_id in engine.computed_kpis():
                values = engine.compute(conn, kpi_id, begins, today)
                conn.commit()
                city_value = next(v for v in values if v.scope == "city")
                if city_value.coverage.sources_expected:
                    assert city_value.rating is not engine.Rating.INSUFFICIENT_DATA, (
                        kpi_id,
                        city_value.coverage,
                    )

            # The live run joins the history at the seam: from a while before it to the next
            # minute's tick after it, every reading the model generates is stored, once.
            simulation = Simulation(manifest)
            window = (before - 600.0, math.ceil(after / 60.0) * 60.0 + 60.0)
            expected = _expected(simulation, *window)
            assert _wait_stored(conn, *window, expected, timeout=_WAIT_S) == expected
            # And the whole week before, imported: exactly what the model generates.
            week = (begins.timestamp(), today.timestamp())
            assert _stored(conn, *week) == _expected(simulation, *week)

        # A restart imports today again, over what the live run stored: duplicates, not
        # conflicts, not copies.
        with contextlib.ExitStack() as stack:
            again, _, parts = _start(stack, database_url, mqtt_broker, state)
            assert parts.get(timeout=_WAIT_S) == "today"
            assert parts.get(timeout=_WAIT_S) == "history"
            span = (begins.timestamp(), again)
            assert _stored(conn, *span) == _expected(simulation, *span)
        row = conn.execute(
            "SELECT (sum(duplicates) FILTER (WHERE span_hi > to_timestamp(%s)))::bigint, "
            "sum(conflicts)::bigint, sum(quarantined)::bigint, "
            "count(*) FILTER (WHERE span_lo < %s) "
            "FROM import_runs",
            (after, today),
        ).fetchone()
        assert row is not None
        duplicates, conflicts, quarantined, days_imported = row
        assert isinstance(duplicates, int)
        assert duplicates > 0
        assert (conflicts, quarantined) == (0, 0)
        assert days_imported == HISTORY_DAYS  # a whole day imported before is not imported again
