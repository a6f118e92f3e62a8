"""TRA-1 and TRA-2 on hand-built cities, each answer worked out by hand in the test."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from services.kpi.model import CitySettings, KpiQuery, KpiRow
from services.kpi.queries.traffic import COMPUTATIONS

from ..conftest import City, Conn

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
D1 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
TRA_1, TRA_2 = COMPUTATIONS["TRA-1"], COMPUTATIONS["TRA-2"]
# One ten-minute peak a weekday keeps the data sets small.
PEAK = CitySettings(peak_periods=((time(8, 0), time(8, 10)),))


def _minutes(
    city: City, key: int, start: datetime, minutes: int, vehicles: float, speed: float | None
) -> None:
    """One count (and, when vehicles pass, one speed) reading a minute from ``start``."""
    points = []
    for i in range(minutes):
        moment = start + i * MINUTE
        points.append((key, "count", moment, vehicles))
        if vehicles > 0 and speed is not None:
            points.append((key, "speed", moment, speed))
    city.write(points)


def _summary(row: KpiRow) -> tuple[int, int, float | None]:
    return row.sources_used, row.sources_expected, row.completeness


def _peak_city(city: City) -> None:
    """One-minute counters; a peak window expects 10 count readings per segment."""
    city.district("north")
    city.district("south")
    n1 = city.sensor(
        "tra-n1", "traffic_counter", "north", segment_length_m=1000, free_flow_speed=20
    )
    n2 = city.sensor("tra-n2", "traffic_counter", "north", segment_length_m=500, free_flow_speed=25)
    s1 = city.sensor(
        "tra-s1", "traffic_counter", "south", segment_length_m=2000, free_flow_speed=20
    )
    # No free-flow speed in the registry: expected, but it can never contribute.
    s2 = city.sensor("tra-s2", "traffic_counter", "south", segment_length_m=800)
    monday_peak = D1 + 8 * HOUR
    # n1: 10 vehicles a minute at 10 m/s: n L / v = 10 x 1000 / 10 = 1000 s a minute, 10 000 s
    # in all; at free flow 10 x 1000 / 20 = 500 s a minute, 5000 s.
    _minutes(city, n1, monday_peak, 10, 10, 10.0)
    # Crawling just before the peak window: outside it, so it must not count.
    _minutes(city, n1, monday_peak - 10 * MINUTE, 10, 10, 1.0)
    # n2: 5 minutes of 20 vehicles at free flow (20 x 500 / 25 = 400 s a minute, 2000 s both
    # ways), then 5 empty minutes (count 0, no speed).
    _minutes(city, n2, monday_peak, 5, 20, 25.0)
    _minutes(city, n2, monday_peak + 5 * MINUTE, 5, 0, None)
    # s1: only 5 of 10 minutes, 4 vehicles at 5 m/s: 4 x 2000 / 5 = 1600 s a minute, 8000 s;
    # free flow 4 x 2000 / 20 = 400 s a minute, 2000 s.
    _minutes(city, s1, monday_peak, 5, 4, 5.0)
    _minutes(city, s2, monday_peak, 10, 10, 10.0)
    # Tuesday: only n1, at free flow (500 s a minute both ways, 5000 s).
    _minutes(city, n1, monday_peak + DAY, 10, 10, 20.0)
    # Saturday: a jam in the peak hours, but no weekday, so it must not count.
    _minutes(city, n1, monday_peak + 5 * DAY, 10, 10, 1.0)


def test_travel_time_index_per_day_district_and_city(city: City, db: Conn) -> None:
    _peak_city(city)
    got = {
        (row.bucket, row.district_id): row
        for row in TRA_1(
            db, KpiQuery(buckets=[(D1, D1 + DAY), (D1 + DAY, D1 + 2 * DAY)], settings=PEAK)
        )
    }
    # Monday. north: (10 000 + 2000) / (5000 + 2000) = 1.714 (vehicle-time weighted, not the
    # mean 1.5 of n1's 2.0 and n2's 1.0); 2 of 2 segments; 20 of 20 count readings.
    # south: s1 alone, 8000 / 2000 = 4.0; 1 of 2 segments; (5 + 10) of 20 readings.
    # city: (10 000 + 2000 + 8000) / (5000 + 2000 + 2000) = 2.222; 3 of 4; 35 of 40.
    # Tuesday. north: n1 at free flow, 1.0; 1 of 2; 10 of 20. south: nothing, 0 of 2, 0 of 20.
    # city: 1.0; 1 of 4; 10 of 40.
    tuesday = D1 + DAY
    expected = {
        (D1, "north"): (12_000 / 7000, (2, 2, 1.0)),
        (D1, "south"): (4.0, (1, 2, 0.75)),
        (D1, None): (20_000 / 9000, (3, 4, 35 / 40)),
        (tuesday, "north"): (1.0, (1, 2, 0.5)),
        (tuesday, "south"): (None, (0, 2, 0.0)),
        (tuesday, None): (1.0, (1, 4, 0.25)),
    }
    assert sorted(got, key=str) == sorted(expected, key=str)
    for scope, (value, summary) in expected.items():
        assert got[scope].value == pytest.approx(value), scope
        assert _summary(got[scope]) == pytest.approx(summary), scope
    assert got[(D1, None)].detail == pytest.approx(
        {"vehicle_hours": 20_000 / 3600, "free_flow_vehicle_hours": 9000 / 3600}
    )


def test_travel_time_index_over_a_week_counts_weekdays_only(city: City, db: Conn) -> None:
    _peak_city(city)
    week = KpiQuery(buckets=[(D1, D1 + 7 * DAY)], districts=["south"], settings=PEAK)
    rows = TRA_1(db, week)
    assert [row.district_id for row in rows] == ["south", None]
    # city: (20 000 + 5000) / (9000 + 5000) = 1.786; Saturday's jam left out (with it, n1 would
    # add 10 x 1000 / 1 = 10 000 s a minute). 5 weekday windows x 10 readings x 4 segments = 200
    # expected; delivered 20 (n1) + 10 (n2) + 5 (s1) + 10 (s2) = 45.
    assert rows[1].value == pytest.approx(25_000 / 14_000)
    assert _summary(rows[1]) == pytest.approx((3, 4, 45 / 200))
    # south alone, as on Monday: 4.0; (5 + 10) of 100.
    assert rows[0].value == pytest.approx(4.0)
    assert _summary(rows[0]) == pytest.approx((1, 2, 15 / 100))


def test_peak_windows_are_local_time(city: City, db: Conn) -> None:
    # Berlin is UTC+1 in November: the 08:00 peak is 07:00 UTC.
    city.district("centre")
    segment = city.sensor(
        "tra-c1", "traffic_counter", "centre", segment_length_m=1000, free_flow_speed=20
    )
    _minutes(city, segment, D1 + 7 * HOUR, 10, 10, 20.0)  # local 08:00: free flow
    _minutes(city, segment, D1 + 8 * HOUR, 10, 10, 5.0)  # local 09:00: jammed, off-peak
    settings = CitySettings(timezone="Europe/Berlin", peak_periods=PEAK.peak_periods)
    row = TRA_1(db, KpiQuery(buckets=[(D1, D1 + DAY)], settings=settings))[-1]
    # Only the free-flow minutes are in the window: 1.0 (read in UTC it would be 4.0).
    assert row.value == pytest.approx(1.0)
    assert _summary(row) == pytest.approx((1, 1, 1.0))


def _coverage_city(city: City) -> None:
    """One-minute counters; an hour expects 60 count readings, monitored from 45."""
    city.district("north")
    city.district("south")

    def segment(
        name: str, district: str, road_class: str, length_m: float | None, **kw: Any
    ) -> int:
        return city.sensor(
            name,
            "traffic_counter",
            district,
            road_class=road_class,
            segment_length_m=length_m,
            **kw,
        )

    h8 = D1 + 8 * HOUR
    _minutes(city, segment("tra-m1", "north", "arterial", 2000), h8, 120, 5, 10.0)  # 60 + 60
    _minutes(city, segment("tra-m2", "north", "primary", 1000), h8, 45, 5, 10.0)  # exactly 75 %
    _minutes(city, segment("tra-m3", "north", "motorway", 3000), h8, 44, 5, 10.0)  # just under
    _minutes(city, segment("tra-r1", "north", "residential", 5000), h8, 60, 5, 10.0)  # not major
    segment("tra-m4", "south", "major", 500)  # silent
    _minutes(city, segment("tra-m5", "south", "major", None), h8, 60, 5, 10.0)  # no length
    # Installed at 08:30: owes 30 readings in the first hour and delivers them.
    installed = segment("tra-m6", "south", "major", 1500, installed_at=h8 + 30 * MINUTE)
    _minutes(city, installed, h8 + 30 * MINUTE, 30, 5, 10.0)


def test_monitoring_coverage_per_hour_district_and_city(city: City, db: Conn) -> None:
    _coverage_city(city)
    h8, h9 = D1 + 8 * HOUR, D1 + 9 * HOUR
    got = {
        (row.bucket, row.district_id): row
        for row in TRA_2(db, KpiQuery(buckets=[(h8, h9), (h9, h9 + HOUR)]))
    }
    # 08:00. north: m1 (2 km) and m2 (1 km) monitored, m3 (3 km) not -> 3 / 6 = 50 %.
    # south: m6 (1.5 km) monitored, m4 (0.5 km) silent, m5 has no length -> 1.5 / 2 = 75 %.
    # city: 4.5 / 8 = 56.25 %.
    # 09:00: only m1 reports. north 2 / 6 = 33.3 %, south 0 / 2 = 0 %, city 2 / 8 = 25 %.
    # Every major segment in service is a source (r1 is not major): north 3, south 3.
    expected = {
        (h8, "north"): (50.0, 3),
        (h8, "south"): (75.0, 3),
        (h8, None): (56.25, 6),
        (h9, "north"): (100 / 3, 3),
        (h9, "south"): (0.0, 3),
        (h9, None): (25.0, 6),
    }
    assert sorted(got, key=str) == sorted(expected, key=str)
    for scope, (value, sources) in expected.items():
        assert got[scope].value == pytest.approx(value), scope
        assert (got[scope].sources_used, got[scope].sources_expected) == (sources, sources)
        assert got[scope].completeness is None
    # south at 08:00: readings 0 (m4) + 60 (m5) + 30 (m6) of 60 + 60 + 30.
    assert got[(h8, "south")].detail == pytest.approx(
        {
            "km_monitored": 1.5,
            "km_major": 2.0,
            "segments_monitored": 2,  # m5 too, though its km are unknown
            "segments_reporting": 2,
            "segments_without_length": 1,
            "reading_completeness": 90 / 150,
        }
    )
    # north at 08:00: (60 + 45 + 44) of 180 readings.
    assert got[(h8, "north")].detail["reading_completeness"] == pytest.approx(149 / 180)


def test_monitoring_coverage_follows_the_city_major_road_classes(city: City, db: Conn) -> None:
    _coverage_city(city)
    h8 = D1 + 8 * HOUR
    settings = CitySettings(major_road_classes=("residential",))
    # Only r1 (5 km, 60 of 60 readings) is major now: 100 %, 1 source, in north and the city.
    rows = TRA_2(db, KpiQuery(buckets=[(h8, h8 + HOUR)], settings=settings))
    assert [(row.district_id, row.value, row.sources_expected) for row in rows] == [
        ("north", 100.0, 1),
        (None, 100.0, 1),
    ]


def test_monitoring_coverage_of_a_bucket_still_to_come_has_no_value(city: City, db: Conn) -> None:
    _coverage_city(city)
    tomorrow = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + DAY
    rows = TRA_2(db, KpiQuery(buckets=[(tomorrow, tomorrow + HOUR)]))
    # Nothing was owed yet, so nothing is "not monitored": no value rather than 0 %.
    assert [(row.district_id, row.value) for row in rows] == [
        ("north", None),
        ("south", None),
        (None, None),
    ]


def test_a_districts_peak_periods_override_the_citys(city: City, db: Conn) -> None:
    # The city's peak is 08:00-08:10 (PEAK); north sets 09:00-09:10 in its reference (registry).
    city.district("north", peak_periods=[["09:00", "09:10"]])
    city.district("south")
    n1 = city.sensor(
        "tra-n1", "traffic_counter", "north", segment_length_m=1000, free_flow_speed=20
    )
    s1 = city.sensor(
        "tra-s1", "traffic_counter", "south", segment_length_m=1000, free_flow_speed=20
    )
    # Both segments: 10 vehicles a minute at 10 m/s from 08:00 to 08:10 (index 2: 1000 s a
    # minute over 500 s at free flow) and at 20 m/s, free flow, from 09:00 to 09:10 (index 1).
    for key in (n1, s1):
        _minutes(city, key, D1 + 8 * HOUR, 10, 10, 10.0)
        _minutes(city, key, D1 + 9 * HOUR, 10, 10, 20.0)
    got = {
        row.district_id: row for row in TRA_1(db, KpiQuery(buckets=[(D1, D1 + DAY)], settings=PEAK))
    }
    # north judges its own window 09:00-09:10: 10 x 500 s / 10 x 500 s = 1.0.
    # south keeps the city's 08:00-08:10: 10 x 1000 s / 10 x 500 s = 2.0.
    # city: (5000 + 10000) / (5000 + 5000) = 1.5, each segment over its own district's windows.
    assert got["north"].value == pytest.approx(1.0)
    assert got["south"].value == pytest.approx(2.0)
    assert got[None].value == pytest.approx(1.5)
    assert _summary(got["north"]) == (1, 1, 1.0)
