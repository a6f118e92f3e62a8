"""Every default rule raises on hand-built readings and clears when they come back, in both storage
modes; install_defaults is idempotent and keeps a city's edits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from services.kpi.alerts import DEFAULT_RULES, evaluate, get_rule, install_defaults, upsert_rule

from ..conftest import City
from .conftest import DEFAULTS, T0, Conn, Install, alert_events, alert_rows

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Case:
    rule_id: str
    quantity: str
    bad: float
    good: float
    columns: dict[str, Any] = field(default_factory=dict)


# Values on the wrong side of each limit, and well back inside its clear band.
LATEST_CASES = [
    Case("water-low-pressure", "pressure", 150_000.0, 300_000.0),
    Case("water-quality-ph", "ph", 9.1, 7.2),
    Case("water-quality-chlorine", "chlorine", 0.1, 0.8),
    Case("water-quality-turbidity", "turbidity", 2.5, 0.3),
    Case("waste-near-full", "fill", 0.93, 0.05),
    Case("waste-overflow", "fill", 1.05, 0.05),
    Case("waste-fire", "temperature", 85.0, 20.0),
    Case("energy-feeder-outage", "voltage", 0.0, 231.0),
    # 50 km/h free flow; 12 km/h is 24 % of it, 45 km/h is 90 %.
    Case("traffic-congestion", "speed", 12 / 3.6, 45 / 3.6, {"free_flow_speed": 50 / 3.6}),
]


@pytest.mark.parametrize("case", LATEST_CASES, ids=lambda c: c.rule_id)
def test_a_default_rule_raises_after_its_duration_and_clears(
    city: City, install: Install, case: Case
) -> None:
    db = city.conn
    rule = install(case.rule_id)
    assert rule.kind is not None
    city.district("d1")
    key = city.sensor("s-1", rule.kind, "d1", **case.columns)
    duration = timedelta(seconds=rule.duration_s)
    bad_until = T0 + duration + 2 * MINUTE
    city.series(key, case.quantity, T0, bad_until, step_s=60, value=case.bad)

    first = evaluate(db, T0 + MINUTE)
    if duration:
        # Holding, but not for long enough yet.
        assert (first.raised, first.pending, first.open) == (0, 1, 0)
        second = evaluate(db, bad_until)
        assert (second.raised, second.pending, second.open) == (1, 0, 1)
    else:
        assert (first.raised, first.open) == (1, 1)

    [alert] = alert_rows(db, case.rule_id)
    assert alert["subject_id"] == "s-1"
    assert (alert["district_id"], alert["state"]) == ("d1", "raised")
    assert alert["severity"] == rule.severity
    assert alert["message"].startswith(f"{rule.name}: s-1")
    if case.columns:
        assert alert["value"] == pytest.approx(case.bad / case.columns["free_flow_speed"])
    else:
        assert alert["value"] == pytest.approx(case.bad)

    city.series(key, case.quantity, bad_until, bad_until + 2 * MINUTE, step_s=60, value=case.good)
    third = evaluate(db, bad_until + 3 * MINUTE)
    assert (third.cleared, third.open) == (1, 0)
    [alert] = alert_rows(db, case.rule_id)
    assert alert["state"] == "cleared"
    assert alert["cleared_by"] is None
    domain = alert["domain"]
    assert [(*e[:3], e[4]) for e in alert_events(db)] == [
        ("d1", domain, "s-1", "raised"),
        ("d1", domain, "s-1", "cleared"),
    ]


@pytest.mark.parametrize(
    ("rule_id", "quantity", "bad", "good"),
    [
        ("air-pm25-who", "pm25", 30.0, 4.0),
        ("air-pm10-who", "pm10", 80.0, 12.0),
        ("air-no2-who", "no2", 60.0, 9.0),
    ],
)
def test_air_quality_rules_judge_the_24_hour_mean(
    city: City, install: Install, rule_id: str, quantity: str, bad: float, good: float
) -> None:
    db = city.conn
    install(rule_id)
    city.district("d1")
    key = city.sensor("air-1", "air_quality", "d1")
    day = timedelta(days=1)
    # Half a day over the limit is not yet 75 % of the day's readings: no verdict.
    city.series(key, quantity, T0, T0 + day / 2, step_s=60, value=bad)
    assert evaluate(db, T0 + day / 2).raised == 0
    city.series(key, quantity, T0 + day / 2, T0 + day, step_s=60, value=bad)
    assert evaluate(db, T0 + day).raised == 1
    [alert] = alert_rows(db, rule_id)
    assert alert["value"] == pytest.approx(bad)
    assert alert["domain"] == "environment"
    # Half a clean day brings the mean to (bad + good) / 2, still above the clear threshold.
    city.series(key, quantity, T0 + day, T0 + 1.5 * day, step_s=60, value=good)
    assert evaluate(db, T0 + 1.5 * day).cleared == 0
    city.series(key, quantity, T0 + 1.5 * day, T0 + 2 * day, step_s=60, value=good)
    assert evaluate(db, T0 + 2 * day).cleared == 1


def _nights(city: City, key: int, first: int, last: int, flow: float, *, offset: timedelta) -> None:
    """Flow every minute of the 02:00-04:00 local window of nights ``first``..``last`` (days
    after T0's date)."""
    base = T0.replace(hour=2, minute=0) - offset
    for night in range(first, last + 1):
        start = base + timedelta(days=night)
        city.series(key, "flow", start, start + timedelta(hours=2), step_s=60, value=flow)


def test_a_night_flow_above_the_usual_minimum_raises_a_suspected_leak(
    city: City, install: Install
) -> None:
    db = city.conn
    install("water-leak-night-flow")
    offset = timedelta(hours=1)  # the city is at UTC+1: its night window is 01:00-03:00 UTC
    city.district("d1", utc_offset_s=3600)
    key = city.sensor("dma-1", "water_inflow", "d1", dma="d1-dma1")
    _nights(city, key, 0, 6, 0.010, offset=offset)  # seven usual nights at 10 l/s
    # Night 7 at 15 l/s in the local window, and low flow just after it (03:00-04:00 UTC): a
    # window taken in UTC would see 5 l/s and no leak.
    _nights(city, key, 7, 7, 0.015, offset=offset)
    after = T0.replace(hour=3) + timedelta(days=7)
    city.series(key, "flow", after, after + timedelta(hours=1), step_s=60, value=0.005)
    morning = T0.replace(hour=5) + timedelta(days=7)  # 06:00 local

    # 03:00 local: the night is not over, and the one before was usual.
    assert evaluate(db, morning - timedelta(hours=3)).raised == 0
    assert evaluate(db, morning).raised == 1
    assert evaluate(db, morning + timedelta(hours=6)).raised == 0  # same night, same alert
    [alert] = alert_rows(db)
    assert alert["value"] == pytest.approx(1.5)
    assert "15 l/s" in alert["message"]
    assert "10 l/s" in alert["message"]

    # The next night is back near the usual 10 l/s (the leak was fixed).
    _nights(city, key, 8, 8, 0.0104, offset=offset)
    assert evaluate(db, morning + timedelta(days=1)).cleared == 1


def test_a_night_flow_needs_enough_previous_nights(city: City, install: Install) -> None:
    db = city.conn
    install("water-leak-night-flow")
    city.district("d1")
    key = city.sensor("dma-1", "water_inflow", "d1")
    _nights(city, key, 0, 1, 0.010, offset=timedelta(0))
    _nights(city, key, 2, 2, 0.030, offset=timedelta(0))
    # Two previous nights are fewer than min_nights (3): no verdict.
    result = evaluate(db, T0.replace(hour=5) + timedelta(days=2))
    assert result.raised == 0


def test_silent_sensor_raises_after_three_intervals_and_fifteen_minutes(
    city: City, install: Install
) -> None:
    db = city.conn
    install("sensor-silent")
    city.district("d1")
    air = city.sensor("air-1", "air_quality", "d1", installed_at=T0 - timedelta(days=30))
    # A container reports every 15 min: 3 intervals is 45 min before it counts as silent.
    bin_ = city.sensor("bin-1", "waste_container", "d1", installed_at=T0 - timedelta(days=30))
    # Registered a minute ago and not heard from yet: too early to say.
    city.sensor("new-1", "noise", "d1", installed_at=T0 + 10 * MINUTE)
    city.write([(air, "pm25", T0, 5.0), (bin_, "fill", T0, 0.2)])

    assert evaluate(db, T0 + 10 * MINUTE).raised == 0
    assert evaluate(db, T0 + 16 * MINUTE).raised == 1
    assert [a["subject_id"] for a in alert_rows(db)] == ["air-1"]
    result = evaluate(db, T0 + 46 * MINUTE)
    assert result.raised == 2  # the container, and the new sensor silent since installed
    assert {a["subject_id"] for a in alert_rows(db)} == {"air-1", "bin-1", "new-1"}

    city.write([(air, "pm10", T0 + 47 * MINUTE, 7.0)])  # any quantity of its kind
    result = evaluate(db, T0 + 48 * MINUTE)
    assert (result.cleared, result.open) == (1, 2)
    assert alert_rows(db)[0]["state"] == "cleared"


def test_silent_gateway_raises_from_last_seen(city: City, install: Install) -> None:
    db = city.conn
    install("gateway-silent")
    city.district("d1")  # gateway gw-d1
    city.sensor("fdr-1", "feeder_meter", "d1")
    db.execute("UPDATE gateways SET last_seen = %s", (T0,))
    db.commit()
    assert evaluate(db, T0 + 14 * MINUTE).raised == 0
    assert evaluate(db, T0 + 16 * MINUTE).raised == 1
    [alert] = alert_rows(db)
    assert (alert["subject_id"], alert["district_id"], alert["domain"]) == (
        "gw-d1",
        "d1",
        "energy",
    )
    assert alert["severity"] == "critical"
    assert alert_events(db)[0][:3] == ("d1", "energy", None)  # a gateway is not a sensor
    db.execute("UPDATE gateways SET last_seen = %s", (T0 + 20 * MINUTE,))
    db.commit()
    assert evaluate(db, T0 + 21 * MINUTE).cleared == 1


def _kpi(
    db: Conn,
    kpi_id: str,
    scope: str,
    rating: str,
    value: float | None,
    *,
    period: str = "day",
    start: datetime = T0 - timedelta(hours=23, minutes=55),
    end: datetime = T0 + timedelta(minutes=5),
    coverage: float = 1.0,
) -> None:
    """A current value as the monitor stores it; by default a day with 5 minutes to run, fully
    covered, so its coverage rule (98 % for WAT-1) already holds for the whole day."""
    db.execute(
        "INSERT INTO kpi_current (kpi_id, scope, period, period_start, period_end, value, rating, "
        "body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (kpi_id, scope, period) "
        "DO UPDATE SET value = excluded.value, rating = excluded.rating, body = excluded.body",
        (
            kpi_id,
            scope,
            period,
            start,
            end,
            value,
            rating,
            Jsonb({"coverage": {"ratio": coverage}}),
        ),
    )
    db.commit()


def test_a_kpi_rated_missed_raises_and_clears_back_in_its_band(
    city: City, install: Install
) -> None:
    db = city.conn
    install("kpi-missed")
    city.district("d1")
    _kpi(db, "AIR-1", "d1", "missed", 31.0)
    _kpi(db, "WAT-1", "city", "met", 12.0)
    assert evaluate(db, T0).raised == 1
    [alert] = alert_rows(db)
    assert (alert["subject_id"], alert["district_id"], alert["domain"]) == (
        "AIR-1/d1/day",
        "d1",
        "environment",
    )
    assert "rated missed" in alert["message"]
    _kpi(db, "AIR-1", "d1", "insufficient_data", None)  # no verdict: stays open
    assert evaluate(db, T0 + MINUTE).cleared == 0
    _kpi(db, "AIR-1", "d1", "warning", 20.0)
    assert evaluate(db, T0 + 2 * MINUTE).cleared == 1
    # A rule may also watch the warning band, of one KPI.
    install("kpi-missed", id="wat1-warning", kpi_id="WAT-1", params={"ratings": ["warning"]})
    _kpi(db, "WAT-1", "city", "warning", 25.0)
    _kpi(db, "AIR-1", "d1", "warning", 20.0)
    result = evaluate(db, T0 + 3 * MINUTE)
    assert result.raised == 1
    assert alert_rows(db, "wat1-warning")[0]["district_id"] is None  # the whole city


def test_a_kpi_missed_in_a_running_period_waits_for_the_periods_coverage(
    city: City, install: Install
) -> None:
    # The first minute of `urbanpulse up`: a month judged on the two days since installation
    # must not raise; the same value once the month's coverage rule holds does.
    db = city.conn
    install("kpi-missed")
    city.district("d1")
    city.sensor("tra-1", "traffic_counter", "d1", installed_at=T0 - timedelta(days=2))
    nov, dec = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    _kpi(db, "TRA-2", "d1", "missed", 0.0, period="month", start=nov, end=dec)
    # Judged from installation (Nov 8 12:00): 2 of 22.5 days gone by, 0.09 < 0.75.
    assert evaluate(db, T0).raised == 0
    assert alert_rows(db) == []
    # Nov 27 12:00: 19 of 22.5 days, 0.84, but only 80 % of what was owed arrived: 0.68 < 0.75.
    late = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    _kpi(db, "TRA-2", "d1", "missed", 0.0, coverage=0.8, period="month", start=nov, end=dec)
    assert evaluate(db, late).raised == 0
    # Fully covered so far: 0.84 >= 0.75, the month's rule holds and the alert is raised.
    _kpi(db, "TRA-2", "d1", "missed", 0.0, period="month", start=nov, end=dec)
    assert evaluate(db, late + MINUTE).raised == 1
    [alert] = alert_rows(db)
    assert alert["subject_id"] == "TRA-2/d1/month"
    # A year (90 %) judged from the same installation: by Nov 27, 19 of its 54 days.
    jan, next_jan = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    _kpi(db, "TRA-2", "d1", "missed", 0.0, period="year", start=jan, end=next_jan)
    assert evaluate(db, late + 2 * MINUTE).raised == 0
    # A period that has ended is judged on its rating alone, as before.
    assert evaluate(db, datetime(2027, 1, 1, 0, 1, tzinfo=UTC)).raised == 1


def test_a_kpi_band_rule_may_judge_running_periods_at_once(city: City, install: Install) -> None:
    db = city.conn
    install("kpi-missed", params={"ratings": ["missed"], "wait_for_coverage": False})
    city.district("d1")
    city.sensor("tra-1", "traffic_counter", "d1", installed_at=T0 - timedelta(days=2))
    _kpi(
        db,
        "TRA-2",
        "d1",
        "missed",
        0.0,
        period="month",
        start=T0 - timedelta(days=9),
        end=T0 + timedelta(days=21),
    )
    assert evaluate(db, T0).raised == 1


def test_install_defaults_is_idempotent_and_keeps_a_citys_edits(db: Conn) -> None:
    first = install_defaults(db)
    assert sorted(first.inserted) == sorted(DEFAULTS)
    db.commit()
    again = install_defaults(db)
    assert (again.inserted, sorted(again.kept)) == ([], sorted(DEFAULTS))
    assert db.execute("SELECT count(*), bool_and(builtin) FROM alert_rules").fetchone() == (
        len(DEFAULT_RULES),
        True,
    )

    edited = get_rule(db, "waste-fire").model_copy(update={"threshold": 80.0, "enabled": False})
    upsert_rule(db, edited)
    install_defaults(db)
    assert (get_rule(db, "waste-fire").threshold, get_rule(db, "waste-fire").enabled) == (
        80.0,
        False,
    )
    reset = install_defaults(db, reset=True)
    assert sorted(reset.reset) == sorted(DEFAULTS)
    assert get_rule(db, "waste-fire") == DEFAULTS["waste-fire"]
