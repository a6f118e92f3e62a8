"""The KPI engine: rating, periods and buckets, targets, baselines, current values, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.kpi.baseline import get_baselines, set_baseline
from services.kpi.catalog import KPIS, Band, Better
from services.kpi.engine import compute, current, refresh_current
from services.kpi.errors import InvalidPeriod, InvalidTarget, UnknownDistrict, UnknownKpi
from services.kpi.model import KpiRow
from services.kpi.periods import buckets, period_bounds
from services.kpi.rating import (
    Coverage,
    Quality,
    Rating,
    annualise,
    checked_band,
    coverage_of,
    rate,
    target_band,
    value_of,
)

from .conftest import City

OK = Coverage(1.0, 1.0, 1, 1, Quality.OK)
NONE = Coverage(0.5, 0.5, 1, 2, Quality.INSUFFICIENT)
LOWER = Band(20.0, 30.0)
HIGHER = Band(80.0, 50.0)


@pytest.mark.parametrize(
    ("value", "coverage", "band", "better", "strict", "expected"),
    [
        pytest.param(10.0, OK, LOWER, Better.LOWER, False, Rating.MET, id="lower-met"),
        pytest.param(20.0, OK, LOWER, Better.LOWER, False, Rating.MET, id="lower-at-target"),
        pytest.param(25.0, OK, LOWER, Better.LOWER, False, Rating.WARNING, id="lower-warning"),
        pytest.param(30.0, OK, LOWER, Better.LOWER, False, Rating.WARNING, id="lower-at-warning"),
        pytest.param(30.1, OK, LOWER, Better.LOWER, False, Rating.MISSED, id="lower-missed"),
        pytest.param(20.0, OK, LOWER, Better.LOWER, True, Rating.WARNING, id="strict-at-target"),
        pytest.param(30.0, OK, LOWER, Better.LOWER, True, Rating.MISSED, id="strict-at-warning"),
        pytest.param(19.9, OK, LOWER, Better.LOWER, True, Rating.MET, id="strict-below"),
        # 100 (432 - 345.6) / 432 summed in floats lands an ulp or two off 20: on the target.
        pytest.param(20 + 4e-15, OK, LOWER, Better.LOWER, False, Rating.MET, id="noise-over"),
        pytest.param(20 - 4e-15, OK, LOWER, Better.LOWER, True, Rating.WARNING, id="noise-strict"),
        pytest.param(80 - 2e-14, OK, HIGHER, Better.HIGHER, False, Rating.MET, id="noise-under"),
        pytest.param(20.001, OK, LOWER, Better.LOWER, False, Rating.WARNING, id="just-over"),
        pytest.param(90.0, OK, HIGHER, Better.HIGHER, False, Rating.MET, id="higher-met"),
        pytest.param(80.0, OK, HIGHER, Better.HIGHER, False, Rating.MET, id="higher-at-target"),
        pytest.param(60.0, OK, HIGHER, Better.HIGHER, False, Rating.WARNING, id="higher-warn"),
        pytest.param(49.0, OK, HIGHER, Better.HIGHER, False, Rating.MISSED, id="higher-missed"),
        pytest.param(
            1.0, NONE, LOWER, Better.LOWER, False, Rating.INSUFFICIENT_DATA, id="silent-not-good"
        ),
        pytest.param(None, OK, LOWER, Better.LOWER, False, Rating.INSUFFICIENT_DATA, id="none"),
    ],
)
def test_rating(
    value: float | None,
    coverage: Coverage,
    band: Band,
    better: Better,
    strict: bool,
    expected: Rating,
) -> None:
    assert rate(value, coverage, band, better, strict) is expected


@pytest.mark.parametrize(
    ("used", "expected", "completeness", "threshold", "ratio", "quality"),
    [
        pytest.param(4, 4, 1.0, 0.75, 1.0, Quality.OK, id="full"),
        pytest.param(4, 4, 0.8, 0.75, 0.8, Quality.PARTIAL, id="partial-readings"),
        pytest.param(3, 4, 1.0, 0.75, 0.75, Quality.PARTIAL, id="a-silent-source"),
        pytest.param(2, 4, 1.0, 0.75, 0.5, Quality.INSUFFICIENT, id="half-silent"),
        pytest.param(4, 4, 0.7, 0.75, 0.7, Quality.INSUFFICIENT, id="thin-readings"),
        pytest.param(49, 50, None, 0.98, 0.98, Quality.OK, id="wat1-threshold"),
        pytest.param(0, 0, None, 0.75, 0.0, Quality.INSUFFICIENT, id="no-sources"),
        pytest.param(4, 4, 0.93, 0.90, 0.93, Quality.PARTIAL, id="annual-threshold"),
    ],
)
def test_coverage(
    used: int,
    expected: int,
    completeness: float | None,
    threshold: float,
    ratio: float,
    quality: Quality,
) -> None:
    row = KpiRow(datetime(2026, 1, 1, tzinfo=UTC), None, 1.0, used, expected, completeness)
    coverage = coverage_of(row, threshold)
    assert coverage.ratio == pytest.approx(ratio)
    assert coverage.quality is quality


def test_annual_targets_annualise_shorter_periods() -> None:
    saifi = KPIS["ENE-1"]
    # 0.1 interruptions in 30 days: 0.1 x 365 / 30 = 1.2167 a year.
    assert annualise(saifi, 0.1, 30.0) == pytest.approx(0.1 * 365 / 30)
    # A year (or a leap year) is rated as it is.
    assert annualise(saifi, 0.7, 365.0) == 0.7
    assert annualise(saifi, 0.7, 366.0) == 0.7
    # A KPI stated per period is never scaled.
    assert annualise(KPIS["WAT-1"], 25.0, 30.0) == 25.0


def test_annual_band_for_a_year_and_overrides() -> None:
    pm25 = KPIS["AIR-1"]
    assert target_band(pm25, "d1", 1.0, {}) == Band(15.0, 25.0)
    assert target_band(pm25, "d1", 365.0, {}) == Band(5.0, 10.0)
    city_override = {"city": Band(12.0, 20.0)}
    assert target_band(pm25, "d1", 1.0, city_override) == Band(12.0, 20.0)
    # The override is of the 24-hour band; annual means keep the WHO annual band.
    assert target_band(pm25, "d1", 365.0, city_override) == Band(5.0, 10.0)
    both = {"city": Band(12.0, 20.0), "d1": Band(10.0, 15.0)}
    assert target_band(pm25, "d1", 1.0, both) == Band(10.0, 15.0)
    assert target_band(pm25, "d2", 1.0, both) == Band(12.0, 20.0)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "at", "tz", "start", "end"),
    [
        pytest.param(
            "hour",
            _utc(2026, 3, 2, 10, 59),
            "UTC",
            _utc(2026, 3, 2, 10),
            _utc(2026, 3, 2, 11),
            id="hour",
        ),
        pytest.param(
            "day", _utc(2026, 3, 2, 23, 59), "UTC", _utc(2026, 3, 2), _utc(2026, 3, 3), id="day"
        ),
        pytest.param(
            "week", _utc(2026, 3, 1, 12), "UTC", _utc(2026, 2, 23), _utc(2026, 3, 2), id="iso-week"
        ),
        pytest.param(
            "month",
            _utc(2028, 2, 29, 12),
            "UTC",
            _utc(2028, 2, 1),
            _utc(2028, 3, 1),
            id="leap-february",
        ),
        pytest.param(
            "month",
            _utc(2026, 12, 31, 23),
            "UTC",
            _utc(2026, 12, 1),
            _utc(2027, 1, 1),
            id="december",
        ),
        pytest.param(
            "year", _utc(2026, 7, 1), "UTC", _utc(2026, 1, 1), _utc(2027, 1, 1), id="year"
        ),
        # Berlin's day of the spring change is 23 hours; its midnight is 23:00 UTC in winter.
        pytest.param(
            "day",
            _utc(2026, 3, 29, 12),
            "Europe/Berlin",
            _utc(2026, 3, 28, 23),
            _utc(2026, 3, 29, 22),
            id="dst-day",
        ),
        pytest.param(
            "month",
            _utc(2026, 3, 31, 22, 30),
            "Europe/Berlin",
            _utc(2026, 3, 31, 22),
            _utc(2026, 4, 30, 22),
            id="tz-month-edge",
        ),
        pytest.param(
            "year",
            _utc(2026, 12, 31, 23, 30),
            "Europe/Berlin",
            _utc(2026, 12, 31, 23),
            _utc(2027, 12, 31, 23),
            id="tz-new-year",
        ),
    ],
)
def test_period_bounds(period: str, at: datetime, tz: str, start: datetime, end: datetime) -> None:
    assert period_bounds(period, at, tz) == (start, end)


def test_buckets() -> None:
    months = buckets(_utc(2026, 1, 1), _utc(2027, 1, 1), "month")
    assert len(months) == 12
    assert months[1] == (_utc(2026, 2, 1), _utc(2026, 3, 1))
    # UTC has no DST: every day of March is 24 h.
    days = buckets(_utc(2026, 3, 1), _utc(2026, 4, 1), "day")
    assert {upper - lower for lower, upper in days} == {timedelta(hours=24)}
    # In Berlin, the days of March cut at local midnight; the 29th lasts 23 h.
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 1, tzinfo=berlin)
    local_days = buckets(start, datetime(2026, 4, 1, tzinfo=berlin), "day", "Europe/Berlin")
    assert len(local_days) == 31
    assert local_days[28] == (_utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22))
    # A period not on the grain's boundaries is clipped at both ends.
    assert buckets(_utc(2026, 3, 1, 10), _utc(2026, 3, 2, 5), "day") == [
        (_utc(2026, 3, 1, 10), _utc(2026, 3, 2)),
        (_utc(2026, 3, 2), _utc(2026, 3, 2, 5)),
    ]
    assert buckets(_utc(2026, 3, 1), _utc(2026, 3, 2), None) == [
        (_utc(2026, 3, 1), _utc(2026, 3, 2))
    ]


DAY = _utc(2026, 3, 2)


def _meters(city: City) -> dict[str, int]:
    """d1: 4 meters, d2: 2 meters, none reporting yet."""
    city.district("d1")
    city.district("d2")
    keys = {f"em-1{n}": city.sensor(f"em-1{n}", "electricity_meter", "d1") for n in range(4)}
    keys |= {f"em-2{n}": city.sensor(f"em-2{n}", "electricity_meter", "d2") for n in range(2)}
    return keys


def _report(city: City, keys: dict[str, int], names: list[str], day: datetime) -> None:
    city.write([(keys[n], "energy", day + timedelta(hours=1), 1.0) for n in names])


def test_targets_overridden_for_the_city_then_per_district(city: City) -> None:
    keys = _meters(city)
    _report(city, keys, ["em-10", "em-11", "em-12", "em-20"], DAY)
    # d1: 3 of 4 = 75 %; d2: 1 of 2 = 50 %; city 4 of 6 = 66.7 %. Catalog band 80 / 50.
    ratings = {v.scope: v.rating for v in compute(city.conn, "ICT-1", DAY, DAY + timedelta(1))}
    assert ratings == {"d1": Rating.WARNING, "d2": Rating.WARNING, "city": Rating.WARNING}
    city.conn.execute(
        "INSERT INTO kpi_targets (kpi_id, scope, target, warning) VALUES ('ICT-1', 'city', 70, 60)"
    )
    values = {v.scope: v for v in compute(city.conn, "ICT-1", DAY, DAY + timedelta(1))}
    # City band 70 / 60 for every scope: d1 75 met, d2 50 missed, city 66.7 warning.
    assert {s: v.rating for s, v in values.items()} == {
        "d1": Rating.MET,
        "d2": Rating.MISSED,
        "city": Rating.WARNING,
    }
    assert (values["d2"].target, values["d2"].warning) == (70.0, 60.0)
    city.conn.execute(
        "INSERT INTO kpi_targets (kpi_id, scope, target, warning) VALUES ('ICT-1', 'd2', 50, 40)"
    )
    values = {v.scope: v for v in compute(city.conn, "ICT-1", DAY, DAY + timedelta(1))}
    # d2 has its own band 50 / 40 now: 50 is met; the others keep the city's.
    assert values["d2"].rating is Rating.MET
    assert values["d1"].target == 70.0


def test_time_series_at_a_grain(city: City) -> None:
    keys = _meters(city)
    _report(city, keys, ["em-10"], DAY)
    _report(city, keys, ["em-10", "em-11", "em-20", "em-21"], DAY + timedelta(1))
    values = compute(city.conn, "ICT-1", DAY, DAY + timedelta(3), grain="day", districts=["d1"])
    series = [(v.period_start, v.scope, v.value) for v in values]
    # d1: 1 of 4, then 2 of 4, then none; city: 1 of 6, 4 of 6, 0 of 6.
    assert series == [
        (DAY, "d1", 25.0),
        (DAY, "city", pytest.approx(100 / 6)),
        (DAY + timedelta(1), "d1", 50.0),
        (DAY + timedelta(1), "city", pytest.approx(400 / 6)),
        (DAY + timedelta(2), "d1", 0.0),
        (DAY + timedelta(2), "city", 0.0),
    ]
    only_districts = compute(city.conn, "ICT-1", DAY, DAY + timedelta(1), include_city=False)
    assert [v.scope for v in only_districts] == ["d1", "d2"]
    json.dumps([v.as_dict() for v in values])  # JSON-ready as it is


def test_baseline_and_progress_in_the_good_direction(city: City) -> None:
    keys = _meters(city)
    _report(city, keys, ["em-10", "em-20"], DAY)  # d1 25 %, d2 50 %, city 33.3 %
    _report(city, keys, ["em-10", "em-11", "em-12", "em-13"], DAY + timedelta(1))
    recorded = set_baseline(city.conn, DAY, DAY + timedelta(1), ["ICT-1"], recorded_by="ana")
    assert {v.scope for v in recorded} == {"d1", "d2", "city"}
    stored = {b.scope: b for b in get_baselines(city.conn, "ICT-1")}
    assert stored["d1"].value == 25.0
    assert stored["d1"].recorded_by == "ana"
    values = {
        v.scope: v for v in compute(city.conn, "ICT-1", DAY + timedelta(1), DAY + timedelta(2))
    }
    # Higher is better. d1: 25 -> 100 %: change +75, +300 %. d2: 50 -> 0 %: change -50, -100 %.
    d1, d2 = values["d1"].baseline, values["d2"].baseline
    assert d1 is not None
    assert d2 is not None
    assert (d1.value, d1.change, d1.change_pct) == (25.0, 75.0, 300.0)
    assert (d2.change, d2.change_pct) == (-50.0, -100.0)
    assert d1.period_start == DAY


def test_progress_of_a_lower_is_better_kpi_is_positive_when_it_falls(city: City) -> None:
    city.district("d1")
    feeder = city.sensor("fdr-1", "feeder_meter", "d1", feeder="F1", customers_served=10)
    city.series(feeder, "voltage", DAY, DAY + timedelta(1), step_s=60,
                value=lambda t: 0.0 if t < DAY + timedelta(minutes=10) else 230.0)  # fmt: skip
    # Baseline: SAIFI 400 a year in 2025 (a year: rated as it is).
    city.conn.execute(
        "INSERT INTO kpi_baselines (kpi_id, scope, period_start, period_end, value, coverage, "
        "quality) VALUES ('ENE-1', 'd1', '2025-01-01Z', '2026-01-01Z', 400, 1, 'ok')"
    )
    value = next(v for v in compute(city.conn, "ENE-1", DAY, DAY + timedelta(1)) if v.scope == "d1")
    # One sustained interruption in a day: SAIFI 1.0, 365 a year; 400 -> 365 is better: +35.
    assert value.value == pytest.approx(1.0)
    assert value.baseline is not None
    assert value.baseline.change == pytest.approx(35.0)
    assert value.baseline.change_pct == pytest.approx(100 * 35 / 400)


def _kpi_events(city: City) -> list[tuple[object, ...]]:
    return city.conn.execute(
        "SELECT district_id, domain, data->>'kpi_id', data->>'period', data->>'rating' "
        "FROM events WHERE type = 'kpi' ORDER BY id"
    ).fetchall()


def test_refresh_current_stores_values_and_writes_events_only_on_change(city: City) -> None:
    keys = _meters(city)
    _report(city, keys, ["em-10"], DAY)
    now = DAY + timedelta(hours=12)
    first = refresh_current(city.conn, now, kpi_ids=["ICT-1"])
    # 3 scopes x 3 periods, all new.
    assert len(first) == 9
    assert len(_kpi_events(city)) == 9
    rows = current(city.conn, kpi_ids=["ICT-1"], scope="d1", period="day")
    assert len(rows) == 1
    assert rows[0]["value"] == 25.0
    assert rows[0]["period_start"] == DAY.isoformat()
    assert "computed_at" in rows[0]
    assert {r["scope"] for r in current(city.conn, period="month")} == {"city", "d1", "d2"}

    # Nothing new: nothing changed, no event.
    assert refresh_current(city.conn, now, kpi_ids=["ICT-1"]) == []
    assert len(_kpi_events(city)) == 9

    # A d2 meter reports: d2 and the city change in every period, d1 does not.
    _report(city, keys, ["em-20"], DAY)
    changed = refresh_current(city.conn, now, kpi_ids=["ICT-1"])
    assert sorted({v.scope for v in changed}) == ["city", "d2"]
    assert len(changed) == 6
    events = _kpi_events(city)[9:]
    assert len(events) == 6
    assert {e[0] for e in events} == {None, "d2"}
    assert {e[1] for e in events} == {"ict"}
    assert current(city.conn, kpi_ids=["ICT-1"], scope="d2")[0]["value"] == 50.0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(
            lambda c: compute(c, "NOPE-1", DAY, DAY + timedelta(1)),
            UnknownKpi,
            "unknown KPI 'NOPE-1'",
            id="unknown-kpi",
        ),
        pytest.param(
            lambda c: compute(c, "ICT-1", DAY, DAY),
            InvalidPeriod,
            "is not after start",
            id="empty-period",
        ),
        pytest.param(
            lambda c: compute(c, "ICT-1", DAY + timedelta(1), DAY),
            InvalidPeriod,
            "is not after start",
            id="reversed",
        ),
        pytest.param(
            lambda c: compute(c, "ICT-1", datetime(2026, 3, 2), DAY + timedelta(1)),
            InvalidPeriod,
            "must carry a timezone",
            id="naive",
        ),
        pytest.param(
            lambda c: compute(c, "ICT-1", DAY, DAY + timedelta(1), grain="fortnight"),
            InvalidPeriod,
            "grain 'fortnight'",
            id="bad-grain",
        ),
        pytest.param(
            lambda c: compute(c, "ICT-1", DAY, DAY + timedelta(days=800), grain="hour"),
            InvalidPeriod,
            "more than 10000 hour buckets",
            id="too-many-buckets",
        ),
        pytest.param(
            lambda c: compute(c, "ICT-1", DAY, DAY + timedelta(1), districts=["d9"]),
            UnknownDistrict,
            "d9",
            id="unknown-district",
        ),
        pytest.param(
            lambda c: period_bounds("decade", DAY),
            InvalidPeriod,
            "period 'decade'",
            id="bad-period",
        ),
        pytest.param(
            lambda c: period_bounds("day", DAY, "Mars/Olympus"),
            InvalidPeriod,
            "unknown timezone",
            id="bad-tz",
        ),
    ],
)
def test_bad_input(city: City, call: object, error: type[Exception], message: str) -> None:
    city.district("d1")
    with pytest.raises(error, match=message) as raised:
        call(city.conn)  # type: ignore[operator]
    assert isinstance(raised.value, ValueError)


def test_a_running_period_is_annualised_over_what_was_observed() -> None:
    """Day 3 of a 30-day period: an annual-target KPI scales the outages so far by 365 / 3, not
    by 365 / 30 (which would rate a bad start ten times too kindly)."""
    start = datetime.now(UTC) - timedelta(days=3)
    row = KpiRow(start, None, 0.5, sources_used=1, sources_expected=1, completeness=1.0)
    value = value_of(  # the rating step alone, for a period still running
        KPIS["ENE-1"],
        row,
        scope="city",
        start=start,
        end=start + timedelta(days=30),
        now=datetime.now(UTC),
        targets={},
        recorded={},
    )
    # 0.5 interruptions in 3 days -> 0.5 x 365 / 3 = 60.8 a year (target 1.0): missed.
    assert value.detail["annualised_value"] == pytest.approx(0.5 * 365 / 3, rel=1e-3)
    assert value.rating is Rating.MISSED


def test_periods_past_the_calendar_are_invalid_not_errors() -> None:
    with pytest.raises(InvalidPeriod):
        period_bounds("year", datetime(9999, 6, 1, tzinfo=UTC))
    with pytest.raises(InvalidPeriod):
        buckets(datetime(9999, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), "year")


@pytest.mark.parametrize(
    ("kpi_id", "target", "warning", "valid"),
    [
        ("ICT-1", 50.0, 40.0, True),  # higher is better: warning below the target
        ("ICT-1", 50.0, 50.0, True),
        ("ICT-1", 50.0, 60.0, False),
        ("ENE-1", 1.0, 2.0, True),  # lower is better: warning above the target
        ("ENE-1", 1.0, 0.5, False),
    ],
)
def test_a_target_band_needs_its_warning_on_the_bad_side(
    kpi_id: str, target: float, warning: float, valid: bool
) -> None:
    kpi = KPIS[kpi_id]
    if valid:
        assert checked_band(kpi, target, warning) == Band(target, warning)
    else:
        with pytest.raises(InvalidTarget, match="bad side"):
            checked_band(kpi, target, warning)
