"""The sensor-kind catalog: units, conversions and bounds of KPIS.md."""

from __future__ import annotations

import pytest

from gateway.kinds import KINDS, QUANTITIES, QUANTITIES_BY_KEY, Domain
from gateway.names import reading_name, split_name


@pytest.mark.parametrize(
    ("quantity", "value", "unit", "canonical"),
    [
        pytest.param("flow", 12.0, "l/s", 0.012, id="l/s"),
        pytest.param("flow", 36.0, "m3/h", 0.01, id="m3/h"),
        pytest.param("index", 1500.0, "l", 1.5, id="litres"),
        pytest.param("pressure", 3.5, "bar", 350_000.0, id="bar"),
        pytest.param("pressure", 1013.0, "hPa", 101_300.0, id="hPa"),
        pytest.param("power", 2.5, "kW", 2500.0, id="kW"),
        pytest.param("energy", 1.0, "kWh", 3.6e6, id="kWh"),
        pytest.param("energy", 2.0, "Wh", 7200.0, id="Wh"),
        pytest.param("fill", 85.0, "%", 0.85, id="fill-%"),
        pytest.param("speed", 36.0, "km/h", 10.0, id="km/h"),
        pytest.param("no2", 10.0, "ppb", 19.0, id="ppb"),
        pytest.param("pm25", 12.0, "ug/m3", 12.0, id="canonical"),
        pytest.param("laeq", 60.0, None, 60.0, id="no-unit"),
    ],
)
def test_accepted_units_convert_to_the_canonical_one(
    quantity: str, value: float, unit: str | None, canonical: float
) -> None:
    assert QUANTITIES[quantity].to_canonical(value, unit) == pytest.approx(canonical)


def test_an_unaccepted_unit_is_refused() -> None:
    assert not QUANTITIES["flow"].accepts("gal/min")
    with pytest.raises(KeyError):
        QUANTITIES["flow"].to_canonical(1.0, "gal/min")


@pytest.mark.parametrize(
    ("kind", "quantity", "inside", "outside"),
    [
        ("water_inflow", "flow", 1.9, 2.1),
        ("water_pressure", "pressure", 1.6e6, 1.7e6),
        ("water_quality", "ph", 14.0, 14.1),
        ("electricity_meter", "power", -50_000.0, -50_001.0),
        ("feeder_meter", "voltage", 300.0, 301.0),
        ("waste_container", "fill", 1.2, 1.21),
        ("waste_container", "temperature", -40.0, -41.0),
        ("traffic_counter", "speed", 70.0, 70.5),
        ("traffic_counter", "occupancy", 1.0, 1.01),
        ("air_quality", "pm25", 1000.0, 1000.5),
        ("air_quality", "no2", 2000.0, 2001.0),
        ("noise", "laeq", 20.0, 19.9),
    ],
)
def test_bounds_follow_kpis_md(kind: str, quantity: str, inside: float, outside: float) -> None:
    bounds = KINDS[kind].quantities[quantity]
    assert bounds.contains(inside)
    assert not bounds.contains(outside)


def test_every_domain_has_kinds_and_every_kind_known_quantities() -> None:
    assert {kind.domain for kind in KINDS.values()} == set(Domain)
    for kind in KINDS.values():
        for name in kind.quantities:
            assert kind.quantity(name) is QUANTITIES[name]


def test_quantity_keys_are_unique_small_integers() -> None:
    assert len(QUANTITIES_BY_KEY) == len(QUANTITIES)
    assert all(0 < key < 2**15 for key in QUANTITIES_BY_KEY)


def test_cumulative_registers_are_marked() -> None:
    assert {q.name for q in QUANTITIES.values() if q.cumulative} == {"index", "energy"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("wat-dma-0001/flow", ("wat-dma-0001", "flow")),
        ("urn:dev:ow:10e2073a01080063/temperature", ("urn:dev:ow:10e2073a01080063", "temperature")),
        ("a/b/c", None),  # sensor ids never hold '/'
        ("no-quantity/", None),
        ("no-separator", None),
        ("/flow", None),
    ],
)
def test_names_split_into_sensor_and_quantity(name: str, expected: tuple[str, str] | None) -> None:
    assert split_name(name) == expected
    if expected:
        assert reading_name(*expected) == name
