"""ICT-1, smart electricity meters reporting, on a hand-built city."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.kpi.engine import Quality, Rating, compute
from services.kpi.model import KpiQuery
from services.kpi.queries.ict import meters_reporting

from ..conftest import City

DAY = datetime(2026, 3, 2, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
NOON = DAY + timedelta(hours=12)


def _build(city: City) -> None:
    city.district("d1")
    city.district("d2")
    city.district("d3")  # no electricity meters at all
    m1 = city.sensor("em-1", "electricity_meter", "d1")  # every 15 min, all day
    m2 = city.sensor("em-2", "electricity_meter", "d1")  # every 15 min, until noon
    city.sensor("em-3", "electricity_meter", "d1")  # silent all day
    city.sensor("em-4", "electricity_meter", "d1", status="pending")  # not commissioned
    city.sensor(
        "em-5", "electricity_meter", "d1", status="retired", retired_at=DAY - timedelta(days=1)
    )
    m6 = city.sensor("em-6", "electricity_meter", "d2")  # one reading all day
    city.series(m1, "energy", DAY, NEXT_DAY, step_s=900, value=lambda t: t.timestamp())
    city.series(m1, "power", DAY, NEXT_DAY, step_s=900, value=500.0)
    city.series(m2, "energy", DAY, NOON, step_s=900, value=lambda t: t.timestamp())
    city.write([(m6, "energy", DAY + timedelta(hours=3), 10.0)])


def test_share_of_meters_reporting_per_district_and_city(city: City) -> None:
    _build(city)
    rows = meters_reporting(city.conn, KpiQuery([(DAY, NEXT_DAY)]))
    by_scope = {r.district_id: r for r in rows}
    # d1 expects em-1, em-2, em-3 (em-4 pending, em-5 retired the day before): 2 of 3 report,
    #   100 * 2 / 3 = 66.67 %. Readings: em-1 96 (its fullest quantity; energy and power both
    #   96), em-2 48 (00:00..11:45), em-3 0 of 3 x 96 expected = 144 / 288 = 0.5.
    # d2: em-6, 1 of 1 = 100 %, 1 reading of 96.
    # city: 3 of 4 meters = 75 %. d3 has no meters: no row.
    assert set(by_scope) == {"d1", "d2", None}
    assert by_scope["d1"].value == pytest.approx(200 / 3)
    assert (by_scope["d1"].sources_used, by_scope["d1"].sources_expected) == (3, 3)
    assert by_scope["d1"].detail["meters_reporting"] == 2
    assert by_scope["d1"].detail["reading_completeness"] == pytest.approx(0.5)
    assert by_scope["d2"].value == pytest.approx(100.0)
    assert by_scope["d2"].detail["reading_completeness"] == pytest.approx(1 / 96)
    assert by_scope[None].value == pytest.approx(75.0)
    assert by_scope[None].detail["meters_registered"] == 4


def test_rated_per_scope_and_a_district_without_meters_is_insufficient(city: City) -> None:
    _build(city)
    values = {v.scope: v for v in compute(city.conn, "ICT-1", DAY, NEXT_DAY)}
    # Band 80 / 50, higher is better: 66.7 is a warning, 100 met, 75 a warning.
    assert values["d1"].rating is Rating.WARNING
    assert values["d2"].rating is Rating.MET
    assert values["city"].rating is Rating.WARNING
    assert values["d3"].value is None
    assert values["d3"].rating is Rating.INSUFFICIENT_DATA
    assert values["d3"].coverage.quality is Quality.INSUFFICIENT


def test_hourly_series_and_only_the_districts_asked_for(city: City) -> None:
    _build(city)
    values = compute(city.conn, "ICT-1", DAY, NEXT_DAY, grain="hour", districts=["d1"])
    assert [v.scope for v in values[:2]] == ["d1", "city"]
    assert len(values) == 24 * 2
    d1 = [v.value for v in values if v.scope == "d1"]
    # Until noon em-1 and em-2 report (2 of 3); after it only em-1 (1 of 3).
    assert d1[0] == pytest.approx(200 / 3)
    assert d1[11] == pytest.approx(200 / 3)
    assert d1[12] == pytest.approx(100 / 3)
    city_values = [v.value for v in values if v.scope == "city"]
    # 03:00 is also em-6's hour: 3 of 4.
    assert city_values[3] == pytest.approx(75.0)
    assert city_values[13] == pytest.approx(25.0)


def test_only_smart_meters_count_in_the_numerator_over_all_meters(city: City) -> None:
    city.district("d1")
    smart = city.sensor("em-s1", "electricity_meter", "d1", smart=True)
    city.sensor("em-s2", "electricity_meter", "d1", smart=True)  # smart, silent
    manual = city.sensor("em-m1", "electricity_meter", "d1", smart=False)  # read by hand
    city.sensor("em-m2", "electricity_meter", "d1", smart=False)  # not smart, silent
    legacy = city.sensor("em-l1", "electricity_meter", "d1")  # smart unset: the kind's default
    city.write(
        [
            (smart, "energy", NOON, 1.0),
            (manual, "energy", NOON, 2.0),
            (legacy, "energy", NOON, 3.0),
        ]
    )
    (d1, whole) = meters_reporting(city.conn, KpiQuery([(DAY, NEXT_DAY)]))
    # Numerator: smart meters with a reading = em-s1 and em-l1 (unset is smart) = 2; em-m1
    # reports but is not smart. Denominator: every meter in service = 5. 100 * 2 / 5 = 40 %.
    # Counting every reporting meter as smart (the old query) gives 3 / 5 = 60 %.
    assert d1.value == pytest.approx(40.0)
    assert whole.value == pytest.approx(40.0)
    assert d1.detail["meters_reporting"] == 2
    assert d1.detail["smart_meters"] == 3
    assert d1.detail["meters_registered"] == 5
