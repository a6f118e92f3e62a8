"""The monitor round: current KPI values stored with their events, alert rules evaluated, and a
quiet second round (nothing changed, nothing logged twice); the loop narrowed to the day while
history arrives, widened when woken or when its time runs out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from services.kpi import engine
from services.kpi.alerts.defaults import install_defaults
from services.kpi.monitor import Monitor, run_round
from services.storage import events

from .conftest import City


def test_a_round_stores_current_values_and_a_second_round_is_quiet(city: City) -> None:
    city.district("d01")
    station = city.sensor("air-d01-1", "air_quality", "d01", interval_s=60)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    city.series(station, "pm25", start, start + timedelta(hours=1), step_s=60, value=12.0)
    install_defaults(city.conn)
    city.conn.commit()

    first = run_round(city.conn)
    stored = city.conn.execute("SELECT count(*) FROM kpi_current").fetchone()
    # Every computed KPI, for d01 and the city, for the current day, month and year.
    assert stored == (len(engine.computed_kpis()) * 2 * 3,)
    assert first.kpi_changed == len(engine.computed_kpis()) * 2 * 3
    kpi_events = events.read_after(city.conn, 0, types=["kpi"])
    assert len(kpi_events) == first.kpi_changed

    second = run_round(city.conn)
    assert second.kpi_changed == 0
    assert len(events.read_after(city.conn, 0, types=["kpi"])) == first.kpi_changed


def _readings_today(city: City) -> None:
    city.district("d01")
    station = city.sensor("air-d01-1", "air_quality", "d01", interval_s=60)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    city.series(station, "pm25", start, start + timedelta(hours=1), step_s=60, value=12.0)


def _stored_periods(city: City) -> set[str]:
    rows = city.conn.execute("SELECT DISTINCT period FROM kpi_current").fetchall()
    city.conn.commit()  # a fresh snapshot next time
    return {str(row[0]) for row in rows}


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def _running(monitor: Monitor) -> Iterator[Monitor]:
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield monitor
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_a_narrowed_monitor_judges_the_day_only_until_woken_with_every_period(
    city: City, database_url: str
) -> None:
    _readings_today(city)
    # Rounds an hour apart: only a wake can bring the second one within the test.
    monitor = Monitor(database_url, every_s=3600, first_periods=("day",), widen_after_s=3600)
    with _running(monitor):
        assert _eventually(lambda: monitor.rounds == 1)
        assert _stored_periods(city) == {"day"}
        assert monitor.periods == ("day",)
        monitor.wake(engine.CURRENT_PERIODS)
        assert _eventually(lambda: monitor.rounds == 2)
        assert _stored_periods(city) == set(engine.CURRENT_PERIODS)
        assert monitor.periods == tuple(engine.CURRENT_PERIODS)


def test_a_narrowed_monitor_never_woken_widens_when_its_time_runs_out(
    city: City, database_url: str
) -> None:
    _readings_today(city)
    # As when the history's backfill died: the wake that was to widen it never comes.
    monitor = Monitor(database_url, every_s=1.0, first_periods=("day",), widen_after_s=5.0)
    with _running(monitor):
        assert _eventually(lambda: monitor.rounds >= 1)
        assert _stored_periods(city) == {"day"}
        assert _eventually(lambda: _stored_periods(city) == set(engine.CURRENT_PERIODS))
        # For good: narrowing again once the time is out would bring back the same trap.
        monitor.wake(("day",))
        assert monitor.periods == tuple(engine.CURRENT_PERIODS)
