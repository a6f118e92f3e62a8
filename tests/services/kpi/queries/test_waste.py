"""WST-1 on hand-built cities, each answer worked out by hand in the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.kpi.model import CitySettings, KpiQuery, KpiRow
from services.kpi.queries.waste import COMPUTATIONS

from ..conftest import City, Conn

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
D1 = datetime(2026, 11, 2, tzinfo=UTC)
D2, D3 = D1 + DAY, D1 + 2 * DAY
WST_1 = COMPUTATIONS["WST-1"]


def _hourly(city: City, key: int, start: datetime, fills: list[float]) -> None:
    city.write((key, "fill", start + i * HOUR, fill) for i, fill in enumerate(fills))


def _ramp(top: float, hours: int = 24) -> list[float]:
    """Fill rising evenly to ``top`` at the last of ``hours`` readings."""
    return [top * (i + 1) / hours for i in range(hours)]


def _summary(row: KpiRow) -> tuple[int, int, float | None]:
    return row.sources_used, row.sources_expected, row.completeness


def _waste_city(city: City) -> None:
    """Hourly fill sensors: 24 readings expected a day."""
    city.district("north")
    city.district("south")
    c1 = city.sensor("wst-n1", "waste_container", "north", interval_s=3600)
    c2 = city.sensor("wst-n2", "waste_container", "north", interval_s=3600)
    c3 = city.sensor("wst-s1", "waste_container", "south", interval_s=3600)
    pending = city.sensor("wst-s2", "waste_container", "south", interval_s=3600, status="pending")
    _hourly(city, c1, D1, _ramp(0.8))  # day 1: max 0.8
    _hourly(city, c1, D2, _ramp(1.0))  # day 2: max exactly 1.0, the threshold: overflowing
    _hourly(city, c2, D1, _ramp(1.1))  # day 1: overflowing; day 2 silent
    _hourly(city, c3, D1, _ramp(0.5, 12))  # day 1: 12 of 24 readings, max 0.5
    _hourly(city, c3, D2, _ramp(0.99))  # day 2: max 0.99, just under
    _hourly(city, pending, D1, [1.2] * 24)  # not commissioned: ignored


def test_overflow_rate_per_day_district_and_city(city: City, db: Conn) -> None:
    _waste_city(city)
    rows = WST_1(db, KpiQuery(buckets=[(D1, D2), (D2, D3)]))
    got = {(row.bucket, row.district_id): row for row in rows}
    assert list(got) == [(day, scope) for day in (D1, D2) for scope in ("north", "south", None)]
    # Day 1. north: c1 (0.8) and c2 (1.1) observed, 1 overflowing -> 50 %; 48 of 48 readings.
    # south: c3 observed, not overflowing -> 0 %; 12 of 24 readings. city: 1 of 3 -> 33.3 %;
    # 3 of 3 containers; 60 of 72 readings.
    # Day 2. north: c1 (1.0 >= 1.0) observed and overflowing, c2 silent -> 100 %, 1 of 2
    # containers, 24 of 48. south: c3 (0.99) -> 0 %, 24 of 24. city: 1 of 2 -> 50 %,
    # 2 of 3 containers, 48 of 72.
    expected = {
        (D1, "north"): (50.0, (2, 2, 1.0)),
        (D1, "south"): (0.0, (1, 1, 0.5)),
        (D1, None): (100 / 3, (3, 3, 60 / 72)),
        (D2, "north"): (100.0, (1, 2, 0.5)),
        (D2, "south"): (0.0, (1, 1, 1.0)),
        (D2, None): (50.0, (2, 3, 48 / 72)),
    }
    for scope, (value, summary) in expected.items():
        assert got[scope].value == pytest.approx(value), scope
        assert _summary(got[scope]) == pytest.approx(summary), scope
    assert got[(D2, None)].detail == {
        "container_days_observed": 2,
        "container_days_overflowing": 1,
    }


def test_overflow_rate_over_two_days_and_a_lower_threshold(city: City, db: Conn) -> None:
    _waste_city(city)
    # One bucket: north observed 3 container-days (c1 twice, c2 once), 2 overflowing -> 66.7 %;
    # city 5 observed, 2 overflowing -> 40 %; readings 24 + 24 + 24 + 12 + 24 = 108 of 144.
    rows = WST_1(db, KpiQuery(buckets=[(D1, D3)], districts=["north"]))
    assert [row.district_id for row in rows] == ["north", None]
    assert [row.value for row in rows] == pytest.approx([200 / 3, 40.0])
    assert _summary(rows[1]) == pytest.approx((3, 3, 108 / 144))
    # With the threshold at 0.95, c3's 0.99 on day 2 overflows too: city 3 of 5 -> 60 %.
    lower = KpiQuery(buckets=[(D1, D3)], settings=CitySettings(overflow_threshold=0.95))
    assert WST_1(db, lower)[-1].value == pytest.approx(60.0)


def test_container_days_are_local_days(city: City, db: Conn) -> None:
    # Tokyo is UTC+9: local 3 November is [2 Nov 15:00Z, 3 Nov 15:00Z).
    tokyo = ZoneInfo("Asia/Tokyo")
    start = datetime(2026, 11, 3, tzinfo=tokyo)
    city.district("centre")
    container = city.sensor("wst-c1", "waste_container", "centre", interval_s=3600)
    # 48 hourly readings; only local 3 November 23:00 reaches 1.05.
    _hourly(city, container, start, [0.5] * 23 + [1.05] + [0.5] * 24)
    query = KpiQuery(buckets=[(start, start + 2 * DAY)], settings=CitySettings("Asia/Tokyo"))
    # Two local container-days, one overflowing -> 50 %. Cut at UTC midnights, the bucket
    # would hold three container-days (9 h, 24 h, 15 h) and give 33.3 %.
    row = WST_1(db, query)[-1]
    assert row.value == pytest.approx(50.0)
    assert row.detail == {"container_days_observed": 2, "container_days_overflowing": 1}


def test_a_districts_overflow_threshold_overrides_the_citys(city: City, db: Conn) -> None:
    # north sets 0.8 in its reference data (registry); south keeps the city's 1.0.
    city.district("north", overflow_threshold=0.8)
    city.district("south")
    n1 = city.sensor("wst-n1", "waste_container", "north", interval_s=3600)
    n2 = city.sensor("wst-n2", "waste_container", "north", interval_s=3600)
    s1 = city.sensor("wst-s1", "waste_container", "south", interval_s=3600)
    _hourly(city, n1, D1, _ramp(0.85))  # 0.85 >= 0.8: overflowing in north
    _hourly(city, n2, D1, _ramp(0.7))  # under 0.8
    _hourly(city, s1, D1, _ramp(0.85))  # 0.85 < 1.0: not overflowing in south
    got = {row.district_id: row.value for row in WST_1(db, KpiQuery(buckets=[(D1, D2)]))}
    # north: 1 of 2 container-days -> 50 %. south: 0 of 1 -> 0 %. city: each container judged
    # by its own district's threshold, 1 of 3 -> 33.3 %. (With the city's 1.0 everywhere,
    # north would be 0 %; with 0.8 everywhere, south 100 %.)
    assert got == {"north": pytest.approx(50.0), "south": 0.0, None: pytest.approx(100 / 3)}
