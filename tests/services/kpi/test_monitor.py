"""The monitor round: current KPI values stored with their events, alert rules evaluated, and a
quiet second round (nothing changed, nothing logged twice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.kpi import engine
from services.kpi.alerts.defaults import install_defaults
from services.kpi.monitor import run_round
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
