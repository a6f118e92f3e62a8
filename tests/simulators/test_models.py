"""The shapes the KPIs rely on, one domain at a time."""

from __future__ import annotations

from statistics import fmean

from simulators.city import Manifest
from simulators.scenario import Leak, Scenario, Window
from tests.simulators.conftest import DAY, HOUR, WEDNESDAY, ModelsOf, series


def _first(manifest: Manifest, kind: str) -> str:
    return next(s.id for s in manifest.sensors if s.kind == kind)


def test_dma_inflow_has_a_night_minimum_below_the_daytime_mean(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    flow = series(models_of(None)[_first(manifest, "water_inflow")], "flow", WEDNESDAY, 24)
    night = min(v for h, v in flow if 2 <= h < 4)
    day = fmean(v for h, v in flow if 7 <= h < 22)
    assert night < 0.7 * day


def test_customer_meters_account_for_inflow_minus_losses(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    """WAT-1 from simulated data: (SIV - C) / SIV is the city's loss fraction, leak-free."""
    models = models_of(None)
    dma = "d01-dma1"
    inflow = models[_first(manifest, "water_inflow")]
    meters = [models[s.id] for s in manifest.sensors if s.kind == "water_meter" and s.dma == dma]
    siv = sum(inflow.sample(WEDNESDAY + m * 60.0)[0] or 0.0 for m in range(1440)) * 60.0
    billed = sum(
        (m.sample(WEDNESDAY + DAY)[0] or 0.0) - (m.sample(WEDNESDAY)[0] or 0.0) for m in meters
    )
    nrw = (siv - billed) / siv
    assert 0.08 < nrw < 0.14  # 0.12 / 1.12 = 10.7 %


def test_a_leak_raises_the_night_flow_of_its_dma_only_while_it_runs(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    leak = Leak("d01-dma1", Window(WEDNESDAY + 1 * HOUR, WEDNESDAY + 5 * HOUR), 0.003)
    plain = models_of(None)[_first(manifest, "water_inflow")]
    leaky = models_of(Scenario(leaks=[leak]))[_first(manifest, "water_inflow")]
    during, before = WEDNESDAY + 3 * HOUR, WEDNESDAY + 0.5 * HOUR
    assert (leaky.sample(during)[0] or 0) - (plain.sample(during)[0] or 0) > 0.0029
    assert leaky.sample(before) == plain.sample(before)


def test_registers_never_decrease(manifest: Manifest, models_of: ModelsOf) -> None:
    outage = Scenario(
        feeder_outages={"d01-f1": [Window(WEDNESDAY + 10 * HOUR, WEDNESDAY + 12 * HOUR)]}
    )
    models = models_of(outage)
    for sensor in manifest.sensors:
        model = models[sensor.id]
        for quantity in ("index", "energy"):
            if quantity in model.quantities:
                values = [v for _, v in series(model, quantity, WEDNESDAY, 24, step=300)]
                assert values == sorted(values), sensor.id


def test_rush_hour_counts_are_above_night_and_weekend_peaks_are_lower(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    counter = models_of(None)[_first(manifest, "traffic_counter")]
    weekday = series(counter, "count", WEDNESDAY, 24)
    saturday = series(counter, "count", WEDNESDAY + 3 * DAY, 24)
    rush = fmean(v for h, v in weekday if 7.5 <= h < 9 or 17 <= h < 18.5)
    night = fmean(v for h, v in weekday if 2 <= h < 4)
    assert rush > 5 * max(night, 1.0)
    assert max(v for _, v in saturday) < max(v for _, v in weekday)


def test_an_incident_drops_speed_and_raises_occupancy(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    segment = _first(manifest, "traffic_counter")
    window = Window(WEDNESDAY + 10 * HOUR, WEDNESDAY + 11 * HOUR)
    plain = models_of(None)[segment]
    blocked = models_of(Scenario(road_incidents={segment: [(window, 0.7)]}))[segment]
    t = WEDNESDAY + 10.5 * HOUR
    _, speed, occupancy = plain.sample(t)
    _, slow, jammed = blocked.sample(t)
    assert speed is not None
    assert slow is not None
    assert occupancy is not None
    assert jammed is not None
    assert slow < 0.5 * speed
    assert jammed > occupancy + 0.3


def test_air_quality_and_noise_follow_traffic(manifest: Manifest, models_of: ModelsOf) -> None:
    models = models_of(None)
    air = series(models[_first(manifest, "air_quality")], "no2", WEDNESDAY, 24)
    noise = series(models[_first(manifest, "noise")], "laeq", WEDNESDAY, 24)
    for values in (air, noise):
        assert fmean(v for h, v in values if 7.5 <= h < 9) > fmean(
            v for h, v in values if 2 <= h < 4
        )


def test_fill_rises_between_rounds_and_drops_at_each_one(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    container = models_of(None)[_first(manifest, "waste_container")]
    fills = [v for _, v in series(container, "fill", WEDNESDAY, 14 * 24, step=900)]
    drops = [i for i in range(1, len(fills)) if fills[i] < fills[i - 1] - 0.1]
    assert len(drops) == 4  # two rounds a week, for two weeks
    rising = [fills[i] >= fills[i - 1] for i in range(1, len(fills)) if i not in drops]
    assert all(rising)
    assert max(fills) > 0.4


def test_a_missed_collection_lets_containers_overflow(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    district = manifest.city.districts[0]
    container_id = _first(manifest, "waste_container")
    plain = models_of(None)[container_id]
    # Skip every round of the first two weeks: the fill climbs past the overflow threshold.
    days = {(district.id, int((WEDNESDAY + 3600) // DAY) + d) for d in range(14)}
    skipped = models_of(Scenario(missed_collections=days))[container_id]
    late = WEDNESDAY + 13 * DAY
    assert (skipped.sample(late)[0] or 0) >= 1.0
    assert (plain.sample(late)[0] or 0) < (skipped.sample(late)[0] or 0)


def test_solar_is_zero_at_night_and_peaks_near_noon(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    pv = series(
        models_of(None)[_first(manifest, "solar_inverter")], "power", WEDNESDAY, 24, step=300
    )
    assert all(v == 0 for h, v in pv if h < 3.5 or h > 20.5)
    peak_hour = max(pv, key=lambda hv: hv[1] or 0)[0]
    assert 10.5 <= peak_hour <= 13.5
    assert max(v or 0 for _, v in pv) > 0


def test_a_feeder_outage_zeroes_voltage_and_power_and_stops_the_registers(
    manifest: Manifest, models_of: ModelsOf
) -> None:
    window = Window(WEDNESDAY + 10 * HOUR, WEDNESDAY + 11 * HOUR)
    models = models_of(Scenario(feeder_outages={"d01-f1": [window]}))
    feeder = next(
        s.id for s in manifest.sensors if s.kind == "feeder_meter" and s.feeder == "d01-f1"
    )
    other = next(
        s.id for s in manifest.sensors if s.kind == "feeder_meter" and s.feeder == "d01-f2"
    )
    home = next(
        s.id for s in manifest.sensors if s.kind == "electricity_meter" and s.feeder == "d01-f1"
    )
    volts = series(models[feeder], "voltage", WEDNESDAY + 9 * HOUR, 3)
    assert all(v == 0 for h, v in volts if 1 <= h < 2)
    assert all((v or 0) > 200 for h, v in volts if h < 1 or h >= 2)
    assert all(v == 0 for h, v in series(models[feeder], "power", WEDNESDAY + 10 * HOUR, 1))
    assert all(
        (v or 0) > 200 for _, v in series(models[other], "voltage", WEDNESDAY + 10 * HOUR, 1)
    )
    energy = models[home].quantities.index("energy")
    assert models[home].sample(window.start)[energy] == models[home].sample(window.end - 60)[energy]
    assert models[home].sample(window.start + 60)[0] == 0.0
