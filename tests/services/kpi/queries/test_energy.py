"""ENE-1 SAIFI, ENE-2 SAIDI (and CAIDI), ENE-3 renewable share, on a hand-built city."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.kpi.engine import Quality, Rating, compute, load_settings
from services.kpi.model import KpiQuery
from services.kpi.queries.energy import renewable_share, saidi, saifi

from ..conftest import City

DAY = datetime(2026, 3, 3, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)


def _at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def _zero_between(*spans: tuple[datetime, datetime], normal: float) -> object:
    def value(t: datetime) -> float:
        return 0.0 if any(lo <= t < hi for lo, hi in spans) else normal

    return value


def _feeders(city: City) -> None:
    for district in ("d1", "d2", "d3"):
        city.district(district)
    f1 = city.sensor("fdr-1", "feeder_meter", "d1", feeder="F1", customers_served=100)
    f2 = city.sensor("fdr-2", "feeder_meter", "d1", feeder="F2", customers_served=300)
    f3 = city.sensor("fdr-3", "feeder_meter", "d2", feeder="F3", customers_served=50)
    f4 = city.sensor("fdr-4", "feeder_meter", "d3", feeder="F4", customers_served=10)
    # F1: voltage 0 from 10:00 to 10:09 (10 readings: sustained, 10 min) and 14:00-14:02
    # (3 readings: momentary).
    city.series(
        f1, "voltage", DAY, NEXT_DAY, step_s=60, refresh=False,
        value=_zero_between((_at(10), _at(10, 10)), (_at(14), _at(14, 3)), normal=230.0),
    )  # fmt: skip
    # F2: voltage 0 from 08:00 to 08:04 (5 readings: exactly the 5 min of a sustained one);
    # power 0 from 20:00 to 20:09 with the voltage up: no load, not an outage.
    city.series(
        f2, "voltage", DAY, NEXT_DAY, step_s=60, refresh=False,
        value=_zero_between((_at(8), _at(8, 5)), normal=230.0),
    )  # fmt: skip
    city.series(
        f2, "power", DAY, NEXT_DAY, step_s=60, refresh=False,
        value=_zero_between((_at(20), _at(20, 10)), normal=2e5),
    )  # fmt: skip
    # F3: no outage, but silent after noon: 720 of 1440 readings.
    city.series(f3, "voltage", DAY, _at(12), step_s=60, value=230.0, refresh=False)
    # F4 measures power only: 0 from 03:00 to 03:05 (6 readings, 6 min, sustained).
    city.series(
        f4, "power", DAY, NEXT_DAY, step_s=60,
        value=_zero_between((_at(3), _at(3, 6)), normal=1e5),
    )  # fmt: skip


def test_saifi_and_saidi_per_district_and_city(city: City) -> None:
    _feeders(city)
    query = KpiQuery([(DAY, NEXT_DAY)])
    frequency = {r.district_id: r for r in saifi(city.conn, query)}
    duration = {r.district_id: r for r in saidi(city.conn, query)}
    # d1: F1 (100 customers) one sustained interruption of 10 min, one momentary of 3 min;
    #     F2 (300 customers) one of 5 min; F2's zero power with voltage up does not count.
    #     SAIFI = (100 x 1 + 300 x 1) / 400 = 1.0
    #     SAIDI = (100 x 10 + 300 x 5) / 400 = 2500 / 400 = 6.25 min; CAIDI = 6.25 / 1.0 = 6.25
    assert frequency["d1"].value == pytest.approx(1.0)
    assert duration["d1"].value == pytest.approx(6.25)
    assert duration["d1"].detail["caidi"] == pytest.approx(6.25)
    assert duration["d1"].detail["momentary_interruptions"] == 1
    assert duration["d1"].detail["sustained_interruptions"] == 2
    assert frequency["d1"].completeness == pytest.approx(1.0)
    # d2: no interruption: 0 / 50; readings 720 of 1440 expected: completeness 0.5.
    assert frequency["d2"].value == 0.0
    assert frequency["d2"].completeness == pytest.approx(0.5)
    # d3: F4 power at zero 6 min: SAIFI 10 x 1 / 10 = 1.0, SAIDI 10 x 6 / 10 = 6 min.
    assert frequency["d3"].value == pytest.approx(1.0)
    assert duration["d3"].value == pytest.approx(6.0)
    # City: 460 customers; interrupted 100 + 300 + 10 = 410; minutes 1000 + 1500 + 60 = 2560.
    #   SAIFI = 410 / 460 = 0.8913; SAIDI = 2560 / 460 = 5.5652 min.
    assert frequency[None].value == pytest.approx(410 / 460)
    assert duration[None].value == pytest.approx(2560 / 460)
    # Completeness: (1440 + 1440 + 720 + 1440) / (4 x 1440) = 5040 / 5760 = 0.875
    assert frequency[None].completeness == pytest.approx(0.875)
    assert (frequency[None].sources_used, frequency[None].sources_expected) == (4, 4)


def test_interruptions_fall_in_the_hour_they_began(city: City) -> None:
    _feeders(city)
    rows = saifi(city.conn, KpiQuery([(_at(h), _at(h + 1)) for h in range(24)], ["d1"]))
    d1 = {r.bucket.hour: r.value for r in rows if r.district_id == "d1"}
    # 08:00 F2: 300 / 400 = 0.75; 10:00 F1: 100 / 400 = 0.25; 14:00 is momentary: 0.
    assert d1[8] == pytest.approx(0.75)
    assert d1[10] == pytest.approx(0.25)
    assert d1[14] == 0.0
    assert sum(v or 0.0 for v in d1.values()) == pytest.approx(1.0)


def test_shorter_than_sustained_setting_is_momentary(city: City) -> None:
    _feeders(city)
    city.setting("sustained_outage_s", 360)  # 6 min: F2's 5 min turns momentary
    values = {v.scope: v for v in compute(city.conn, "ENE-1", DAY, NEXT_DAY)}
    # d1: only F1's 10 min remain sustained: 100 / 400 = 0.25.
    assert values["d1"].value == pytest.approx(0.25)
    # d3's 6 min are still sustained (>= 360 s).
    assert values["d3"].value == pytest.approx(1.0)


def test_rated_annualised_and_silent_feeders_insufficient(city: City) -> None:
    _feeders(city)
    values = {v.scope: v for v in compute(city.conn, "ENE-2", DAY, NEXT_DAY)}
    # SAIDI's target is annual (60 / 120 min a year): d1's 6.25 min in a day is
    # 6.25 x 365 = 2281.25 min a year: missed.
    assert values["d1"].detail["annualised_value"] == pytest.approx(6.25 * 365)
    assert values["d1"].rating is Rating.MISSED
    # d2 had no interruption but its feeder was silent half the day (0.5 < 0.75).
    assert values["d2"].value == 0.0
    assert values["d2"].rating is Rating.INSUFFICIENT_DATA
    assert values["d2"].coverage.quality is Quality.INSUFFICIENT


def _registers(city: City) -> None:
    city.district("d1")
    city.district("d2", grid_renewable_fraction=0.5)
    city.setting("grid_renewable_fraction", 0.2)
    fe1 = city.sensor("fdr-e1", "feeder_meter", "d1")
    pv1 = city.sensor("pv-1", "solar_inverter", "d1")  # every 300 s
    fe2 = city.sensor("fdr-e2", "feeder_meter", "d2")
    kwh = 3.6e6

    def minutes(t: datetime) -> float:
        return (t - DAY).total_seconds() / 60

    # fe1: 1 kWh a minute; pv1: 0.5 kWh every 5 min; fe2: 0.5 kWh a minute (registers start
    # at arbitrary indexes, as real ones do). Each is read at 00:00 on both days: the day's
    # boundaries need no interpolation.
    end = NEXT_DAY + timedelta(seconds=1)
    city.series(fe1, "energy", DAY, end, step_s=60, refresh=False,
                value=lambda t: 5e9 + minutes(t) * kwh)  # fmt: skip
    city.series(pv1, "energy", DAY, end, step_s=300, refresh=False,
                value=lambda t: 7e8 + minutes(t) / 5 * 0.5 * kwh)  # fmt: skip
    city.series(fe2, "energy", DAY, end, step_s=60,
                value=lambda t: minutes(t) * 0.5 * kwh)  # fmt: skip


def test_renewable_share_from_cumulative_registers(city: City) -> None:
    _registers(city)
    query = KpiQuery([(DAY, NEXT_DAY)], settings=load_settings(city.conn))
    rows = {r.district_id: r for r in renewable_share(city.conn, query)}
    # Index at the end (00:00 the next day) - index at the start (00:00):
    #   fe1: 1440 minutes x 1 kWh = 1440 kWh; pv1: 288 x 0.5 = 144 kWh; fe2: 0.5 x 1440 = 720 kWh.
    # d1 (f_grid = city's 0.2): (144 + 0.2 x 1440) / (1440 + 144) = 432 / 1584 = 27.27 %
    # d2 (its own f_grid 0.5): (0 + 0.5 x 720) / 720 = 50 %
    # city: (144 + 288 + 360) / (1440 + 144 + 720) = 792 / 2304 = 34.375 %
    assert rows["d1"].detail["e_feeder_kwh"] == pytest.approx(1440)
    assert rows["d1"].detail["e_pv_kwh"] == pytest.approx(144)
    assert rows["d1"].value == pytest.approx(100 * 432 / 1584)
    assert rows["d2"].value == pytest.approx(50.0)
    assert rows[None].value == pytest.approx(34.375)
    assert rows[None].completeness == pytest.approx(1.0)
    assert (rows[None].sources_used, rows[None].sources_expected) == (3, 3)


def test_renewable_share_of_a_district_with_a_silent_register_is_insufficient(
    city: City,
) -> None:
    _registers(city)
    city.sensor("pv-2", "solar_inverter", "d2")  # registered, never heard from
    values = {v.scope: v for v in compute(city.conn, "ENE-3", DAY, NEXT_DAY)}
    # d2: fe2 1440 of 1440 readings, pv-2 0 of 288: completeness 1440 / 1728 = 0.833 >= 0.75,
    # but sources 1 of 2 = 0.5 < 0.75: insufficient.
    assert values["d2"].coverage.completeness == pytest.approx(1440 / 1728)
    assert values["d2"].coverage.ratio == pytest.approx(0.5)
    assert values["d2"].rating is Rating.INSUFFICIENT_DATA
    # d1 is untouched: 27.27 % against 30 / 15: warning.
    assert values["d1"].rating is Rating.WARNING


def test_renewable_share_with_a_flat_pv_register_at_night(city: City) -> None:
    city.district("e1")
    kwh = 3.6e6
    # A feeder at a steady 2 kW, its register read every minute; rooftop PV producing 1 kW from
    # 06:00 to 18:00 only, its register read hourly at ten past (flat all night).
    feeder = city.sensor("fdr-e", "feeder_meter", "e1")
    pv = city.sensor("pv-e", "solar_inverter", "e1", interval_s=3600)

    def sunlit_hours(t: datetime) -> float:
        return min(max((t - DAY).total_seconds() / 3600, 6.0), 18.0) - 6.0

    city.series(feeder, "energy", DAY - timedelta(hours=1), NEXT_DAY + timedelta(hours=6),
                step_s=60, refresh=False,
                value=lambda t: 9e9 + 2 * kwh * (t - DAY).total_seconds() / 3600)  # fmt: skip
    city.series(pv, "energy", DAY - timedelta(minutes=50), NEXT_DAY + timedelta(hours=6),
                step_s=3600, value=lambda t: 4e8 + 1 * kwh * sunlit_hours(t))  # fmt: skip
    (row,) = [
        r for r in renewable_share(city.conn, KpiQuery([(DAY, NEXT_DAY)])) if r.district_id == "e1"
    ]
    # Indexes at 00:00 on both days: E_feeder = 2 kW x 24 h = 48 kWh; E_pv, interpolated between
    # 23:10 and 00:10 where the register is flat = 1 kW x 12 h = 12 kWh.
    # Share = 12 / (48 + 12) = 20 % (f_grid 0).
    # (Last - first stretched to the day took the PV's 12 kWh over 00:10-23:10 as 23 h of a
    # steady output: 12 x 24 / 23 = 12.52 kWh, a share of 20.69 %.)
    assert row.detail["e_feeder_kwh"] == pytest.approx(48)
    assert row.detail["e_pv_kwh"] == pytest.approx(12)
    assert row.value == pytest.approx(20.0)
    # The night, 19:00-05:00, between flat PV readings (18:10 to 05:10): PV 0, the feeder
    # 2 kW x 10 h = 20 kWh: 0 %.
    night = KpiQuery([(_at(19), NEXT_DAY + timedelta(hours=5))])
    (row,) = [r for r in renewable_share(city.conn, night) if r.district_id == "e1"]
    assert row.detail["e_pv_kwh"] == pytest.approx(0.0)
    assert row.detail["e_feeder_kwh"] == pytest.approx(20)
    assert row.value == pytest.approx(0.0)


def test_silent_feeders_leave_saifi_and_saidi(city: City) -> None:
    _feeders(city)
    # d1 gains F5 (600 customers) that never reported: it cannot be judged.
    city.sensor("fdr-5", "feeder_meter", "d1", feeder="F5", customers_served=600)
    city.district("d4")
    # d4's only feeder is silent: nothing can be said of d4.
    city.sensor("fdr-6", "feeder_meter", "d4", feeder="F6", customers_served=20)
    query = KpiQuery([(DAY, NEXT_DAY)])
    frequency = {r.district_id: r for r in saifi(city.conn, query)}
    duration = {r.district_id: r for r in saidi(city.conn, query)}
    # d1: F5's 600 customers leave both sides: SAIFI = (100 + 300) / 400 = 1.0 and
    #   SAIDI = (100 x 10 + 300 x 5) / 400 = 6.25 min, as before F5 (not 400 / 1000 = 0.4 and
    #   2500 / 1000 = 2.5); the coverage shows 2 of 3 feeders and 600 customers not judged.
    assert frequency["d1"].value == pytest.approx(1.0)
    assert duration["d1"].value == pytest.approx(6.25)
    assert (frequency["d1"].sources_used, frequency["d1"].sources_expected) == (2, 3)
    assert frequency["d1"].detail["customers_served"] == pytest.approx(400)
    assert frequency["d1"].detail["customers_not_judged"] == pytest.approx(600)
    # d4: no feeder judged, no value (not 0 / 20 = "no interruption").
    assert frequency["d4"].value is None
    assert duration["d4"].value is None
    assert frequency["d4"].detail["customers_not_judged"] == pytest.approx(20)
    # City: judged customers 100 + 300 + 50 + 10 = 460 as before; interrupted 410, 2560 min.
    assert frequency[None].value == pytest.approx(410 / 460)
    assert duration[None].value == pytest.approx(2560 / 460)
    assert frequency[None].detail["customers_not_judged"] == pytest.approx(620)
    assert (frequency[None].sources_used, frequency[None].sources_expected) == (4, 6)
    values = {v.scope: v for v in compute(city.conn, "ENE-1", DAY, NEXT_DAY)}
    assert values["d4"].rating is Rating.INSUFFICIENT_DATA
    assert values["city"].coverage.sources_expected == 6
