"""AIR-1..3 and NOI-1 on hand-built cities, each answer worked out by hand in the test."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.kpi.model import CitySettings, KpiQuery, KpiRow
from services.kpi.queries.environment import COMPUTATIONS

from ..conftest import City, Conn

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
# A Monday in the past, at midnight UTC.
D1 = datetime(2026, 11, 2, tzinfo=UTC)
D2, D3 = D1 + DAY, D1 + 2 * DAY


def _by_scope(rows: list[KpiRow]) -> dict[tuple[datetime, str | None], KpiRow]:
    return {(row.bucket, row.district_id): row for row in rows}


def _hourly(city: City, key: int, quantity: str, start: datetime, values: list[float]) -> None:
    """One reading an hour from ``start``, the values in order."""
    city.write((key, quantity, start + i * HOUR, v) for i, v in enumerate(values))


def _air_city(city: City) -> None:
    """Three districts; hourly PM2.5 stations (expected 86400 / 3600 = 24 readings a day,
    valid from 0.75 * 24 = 18)."""
    for district in ("east", "north", "south"):
        city.district(district)
    n1 = city.sensor("air-n1", "air_quality", "north", interval_s=3600)
    n2 = city.sensor("air-n2", "air_quality", "north", interval_s=3600)
    s1 = city.sensor("air-s1", "air_quality", "south", interval_s=3600)
    # Not commissioned: neither expected nor used, though it reports.
    pending = city.sensor("air-s2", "air_quality", "south", interval_s=3600, status="pending")
    # n1: day 1, 24 x 10 -> mean 10; day 2, 20 x 20 (20 >= 18: valid) -> mean 20.
    _hourly(city, n1, "pm25", D1, [10.0] * 24)
    _hourly(city, n1, "pm25", D2, [20.0] * 20)
    # n2: day 1, 12 x 12 then 12 x 20 -> mean 16; day 2, 12 x 100 (12 < 18): invalid.
    _hourly(city, n2, "pm25", D1, [12.0] * 12 + [20.0] * 12)
    _hourly(city, n2, "pm25", D2, [100.0] * 12)
    # s1: day 1, exactly 18 x 30 -> valid, mean 30; day 2 silent.
    _hourly(city, s1, "pm25", D1, [30.0] * 18)
    _hourly(city, pending, "pm25", D1, [500.0] * 24)


def test_air_daily_values_per_district_and_city(city: City, db: Conn) -> None:
    _air_city(city)
    rows = COMPUTATIONS["AIR-1"](db, KpiQuery(buckets=[(D1, D2), (D2, D3)]))
    got = _by_scope(rows)
    # 2 buckets x (north, south, the city); east has no station, so no row (the engine
    # reports it as insufficient data).
    assert sorted(got, key=str) == sorted(
        [(b, d) for b in (D1, D2) for d in ("north", "south", None)], key=str
    )
    # Day 1: north = worst of n1 10 and n2 16 = 16; delivered 24 + 24 of 48.
    # south = s1 30; 18 of 24 = 0.75. city = worst station = 30;
    # delivered 24 + 24 + 18 = 66 of 72.
    expected_day1 = {
        "north": (16.0, 2, 2, 1.0),
        "south": (30.0, 1, 1, 0.75),
        None: (30.0, 3, 3, 66 / 72),
    }
    # Day 2: north = n1 20 (n2's day is invalid); delivered 20 + 12 of 48. south: s1 silent,
    # nothing valid, 0 of 24. city = 20 from 1 of 3 stations; 32 of 72.
    expected_day2 = {
        "north": (20.0, 1, 2, 32 / 48),
        "south": (None, 0, 1, 0.0),
        None: (20.0, 1, 3, 32 / 72),
    }
    for bucket, expected in ((D1, expected_day1), (D2, expected_day2)):
        for district, (value, used, sources, completeness) in expected.items():
            row = got[(bucket, district)]
            assert row.value == pytest.approx(value), (bucket, district)
            assert (row.sources_used, row.sources_expected) == (used, sources), (bucket, district)
            assert row.completeness == pytest.approx(completeness), (bucket, district)
    assert got[(D1, None)].detail["worst_station"] == "air-s1"
    assert got[(D2, "north")].detail == {"worst_station": "air-n1", "valid_station_days": 1}


def test_air_over_two_days_is_the_worst_mean_of_valid_station_days(city: City, db: Conn) -> None:
    _air_city(city)
    rows = COMPUTATIONS["AIR-1"](db, KpiQuery(buckets=[(D1, D3)], districts=["north"]))
    # Only north and the city. n1 = (10 + 20) / 2 = 15 (not the mean of its 44 readings,
    # 14.55); n2 = 16, its invalid day left out (with it, (144 + 240 + 1200) / 36 = 44).
    # north = 16; delivered 24 + 20 + 24 + 12 = 80 of 96. The city still covers south:
    # s1 = 30 from its one valid day; delivered 80 + 18 of 144.
    assert [(r.district_id, r.sources_used, r.sources_expected) for r in rows] == [
        ("north", 2, 2),
        (None, 3, 3),
    ]
    assert [r.value for r in rows] == pytest.approx([16.0, 30.0])
    assert rows[0].completeness == pytest.approx(80 / 96)
    assert rows[1].completeness == pytest.approx(98 / 144)
    assert rows[1].detail["valid_station_days"] == 4


@pytest.mark.parametrize(
    ("kpi", "value"), [("AIR-1", 10.0), ("AIR-2", 20.0), ("AIR-3", 30.0)], ids=str
)
def test_each_air_kpi_reads_its_own_pollutant(city: City, db: Conn, kpi: str, value: float) -> None:
    city.district("centre")
    station = city.sensor("air-c1", "air_quality", "centre", interval_s=3600)
    for quantity, level in (("pm25", 10.0), ("pm10", 20.0), ("no2", 30.0)):
        _hourly(city, station, quantity, D1, [level] * 24)
    city_row = COMPUTATIONS[kpi](db, KpiQuery(buckets=[(D1, D2)]))[-1]
    assert city_row.district_id is None
    assert city_row.value == pytest.approx(value)


def test_air_station_days_are_local_days(city: City, db: Conn) -> None:
    # Berlin is UTC+1 in November: local 3 and 4 November start at 23:00 UTC the day before.
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 11, 3, tzinfo=berlin)
    city.district("centre")
    station = city.sensor("air-c1", "air_quality", "centre", interval_s=3600)
    _hourly(city, station, "pm25", start, [10.0] * 24 + [40.0] * 24)
    query = KpiQuery(buckets=[(start, start + 2 * DAY)], settings=CitySettings("Europe/Berlin"))
    # Local days: (10 + 40) / 2 = 25. Cut at UTC midnights instead, the days would be 1 x 10,
    # 23 x 10 + 1 x 40 (mean 11.25) and 23 x 40, and the station mean (10 + 11.25 + 40) / 3.
    city_row = COMPUTATIONS["AIR-1"](db, query)[-1]
    assert city_row.value == pytest.approx(25.0)
    assert city_row.completeness == pytest.approx(1.0)


def test_air_in_a_half_hour_time_zone(city: City, db: Conn) -> None:
    # Kolkata is UTC+5:30: its midnights fall mid-hour in UTC, so the hourly rollup cannot cut
    # the days. Day 1: 24 x 10 at 00:00..23:00 local; day 2: 24 x 30.
    kolkata = ZoneInfo("Asia/Kolkata")
    start = datetime(2026, 11, 3, tzinfo=kolkata)
    city.district("centre")
    station = city.sensor("air-c1", "air_quality", "centre", interval_s=3600)
    _hourly(city, station, "pm25", start, [10.0] * 24 + [30.0] * 24)
    query = KpiQuery(
        buckets=[(start, start + DAY), (start + DAY, start + 2 * DAY)],
        settings=CitySettings("Asia/Kolkata"),
    )
    values = [row.value for row in COMPUTATIONS["AIR-1"](db, query)]
    assert values == pytest.approx([10.0, 10.0, 30.0, 30.0])


def test_air_station_days_cut_inside_a_minute(city: City, db: Conn) -> None:
    # Paris kept its mean time, UTC+00:09:21, until 1911: local midnight on 3 November 1905 is
    # 23:50:39 UTC on the 2nd. Over two whole UTC days (bounds on the minute) the station-days
    # are [2 Nov 00:00, 23:50:39), [23:50:39, 3 Nov 23:50:39) and [23:50:39, 4 Nov 00:00) UTC,
    # each cutting a minute whose readings on either side belong to different days.
    start = datetime(1905, 11, 2, tzinfo=UTC)
    cuts = [
        start + DAY - timedelta(minutes=9, seconds=21),
        start + 2 * DAY - timedelta(minutes=9, seconds=21),
    ]
    last_first = cuts[1] + timedelta(seconds=1)  # the third day's first reading, 23:50:40

    def value(moment: datetime) -> float:
        if moment < cuts[0]:
            return 10.0
        if moment < cuts[1]:
            return 40.0
        return 100.0 if moment == last_first else 70.0

    city.district("centre")
    station = city.sensor("air-c1", "air_quality", "centre", interval_s=20)
    city.series(station, "pm25", start, start + 2 * DAY, step_s=20, value=value)
    query = KpiQuery(buckets=[(start, start + 2 * DAY)], settings=CitySettings("Europe/Paris"))
    # Day means 10, 40 and, over the 28 readings 23:50:40..23:59:40 (28.05 owed: valid),
    # (100 + 27 x 70) / 28; a day missing its cut minute's readings would read 70 there.
    expected = (10.0 + 40.0 + (100.0 + 27 * 70.0) / 28) / 3
    city_row = COMPUTATIONS["AIR-1"](db, query)[-1]
    assert city_row.value == pytest.approx(expected, rel=1e-12)


def test_air_expects_readings_only_while_a_station_is_in_service(city: City, db: Conn) -> None:
    city.district("centre")
    # Installed at noon: day 1 expects 12 readings (valid from 9); 10 of them arrive.
    late = city.sensor(
        "air-c1", "air_quality", "centre", interval_s=3600, installed_at=D1 + 12 * HOUR
    )
    # Retired before the day: not expected at all.
    city.sensor("air-c2", "air_quality", "centre", status="retired", retired_at=D1)
    _hourly(city, late, "pm25", D1 + 12 * HOUR, [8.0] * 10)
    row = COMPUTATIONS["AIR-1"](db, KpiQuery(buckets=[(D1, D2)]))[-1]
    # Value 8 from 1 of 1 stations; completeness 10 of 12.
    assert row.value == pytest.approx(8.0)
    assert (row.sources_used, row.sources_expected) == (1, 1)
    assert row.completeness == pytest.approx(10 / 12)


def _energy_mean(*levels: float) -> float:
    return 10 * math.log10(sum(10 ** (level / 10) for level in levels) / len(levels))


def _lden(day: float, evening: float, night: float) -> float:
    return 10 * math.log10(
        (12 * 10 ** (day / 10) + 4 * 10 ** ((evening + 5) / 10) + 8 * 10 ** ((night + 10) / 10))
        / 24
    )


def test_noise_lden_in_local_time(city: City, db: Conn) -> None:
    """Two local days in Berlin (UTC+1), one-minute meters (1440 readings expected a day)."""
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 11, 3, tzinfo=berlin)
    city.district("north")
    city.district("south")
    loud = city.sensor("noi-n1", "noise", "north")
    quiet = city.sensor("noi-n2", "noise", "north")
    no_nights = city.sensor("noi-s1", "noise", "south")

    def loud_level(moment: datetime) -> float:
        local = moment.astimezone(berlin)
        if local.day == 4:  # day 2: 60 / 55 / 50, so that Lden = 60 exactly
            return {"day": 60.0, "evening": 55.0, "night": 50.0}[_period(local.hour)]
        # Day 1: the day period alternates 60 and 70 dB by minute; evening 55, night 50.
        if _period(local.hour) == "day":
            return 60.0 if local.minute % 2 == 0 else 70.0
        return {"evening": 55.0, "night": 50.0}[_period(local.hour)]

    city.series(loud, "laeq", start, start + 2 * DAY, step_s=60, value=loud_level)
    city.series(quiet, "laeq", start, start + 2 * DAY, step_s=60, value=45.0)
    # 07:00-23:00 only: 960 of 1440 readings and no night level, so no valid day.
    for day in range(2):
        morning = start + day * DAY + 7 * HOUR
        city.series(no_nights, "laeq", morning, morning + 16 * HOUR, step_s=60, value=70.0)

    query = KpiQuery(
        buckets=[(start, start + DAY), (start + DAY, start + 2 * DAY)],
        settings=CitySettings("Europe/Berlin"),
    )
    got = _by_scope(COMPUTATIONS["NOI-1"](db, query))
    # Day 1, loud: Ld = 10 log10((10^6 + 10^7) / 2) = 67.404; Lden = 10 log10((12 * 5.5e6
    # + 4 * 10^6 + 8 * 10^6) / 24) = 10 log10(3.25e6) = 65.119. Quiet: 45 all day, Lden =
    # 10 log10((12 + 4 * 10^0.5 + 8 * 10) / 24 * 10^4.5) = 51.40. north = the loudest, 65.119.
    day1_lden = 10 * math.log10(3.25e6)
    assert day1_lden == pytest.approx(_lden(_energy_mean(60.0, 70.0), 55.0, 50.0))
    assert got[(start, "north")].value == pytest.approx(day1_lden)
    assert got[(start, "north")].detail["worst_station"] == "noi-n1"
    # The mean of dB values (65 dB in the day period) would give a different answer.
    assert got[(start, "north")].value != pytest.approx(_lden(65.0, 55.0, 50.0), abs=0.01)
    assert got[(start + DAY, "north")].value == pytest.approx(60.0)
    # south: 1 station expected, none valid; 960 of 1440 readings delivered.
    south = got[(start, "south")]
    assert (south.value, south.sources_used, south.sources_expected) == (None, 0, 1)
    assert south.completeness == pytest.approx(960 / 1440)
    # city = loudest valid station; 2 of 3 stations; (1440 + 1440 + 960) of 3 x 1440.
    city_row = got[(start, None)]
    assert city_row.value == pytest.approx(day1_lden)
    assert (city_row.sources_used, city_row.sources_expected) == (2, 3)
    assert city_row.completeness == pytest.approx(3840 / 4320)

    # Both days as one bucket: the energy mean of the daily values,
    # 10 log10((3.25e6 + 10^6) / 2) = 10 log10(2.125e6) = 63.274.
    both = KpiQuery(buckets=[(start, start + 2 * DAY)], settings=CitySettings("Europe/Berlin"))
    city_row = COMPUTATIONS["NOI-1"](db, both)[-1]
    assert city_row.value == pytest.approx(10 * math.log10(2.125e6))
    assert city_row.detail["valid_station_days"] == 4


def _period(local_hour: int) -> str:
    if 7 <= local_hour < 19:
        return "day"
    return "evening" if 19 <= local_hour < 23 else "night"
