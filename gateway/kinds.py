"""The sensor-kind catalog: what each kind of sensor measures, in which unit, within which bounds.

One table, shared by the simulators (what to emit), the gateway (what to pack) and the ingestion
validator (what to accept). It is ``../shared/KPIS.md`` "Canonical quantities and units" as code:
the canonical unit is the primary SenML unit (RFC 8428 / RFC 8798 registry) in which readings are
stored; accepted units are converted at ingest; bounds are the physically plausible range, and a
value outside them is a sensor fault, not a reading.

Quantity keys are small stable integers: they are the ``quantity_key`` column of the readings
table, so a key, once given, is never reused for another quantity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Domain(StrEnum):
    WATER = "water"
    ENERGY = "energy"
    WASTE = "waste"
    TRAFFIC = "traffic"
    ENVIRONMENT = "environment"


def convert(value: float, unit: str | None, canonical: str, accepted: Mapping[str, float]) -> float:
    """``value`` given in ``unit`` (None: already ``canonical``) in the ``canonical`` unit, through
    ``accepted`` (unit -> factor); KeyError for a unit it does not list."""
    if unit is None or unit == canonical:
        return value
    return value * accepted[unit]


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured quantity: its storage key, canonical unit and the units converted into it."""

    key: int
    name: str
    unit: str
    description: str
    # unit -> factor that turns a value in that unit into the canonical unit
    accepted: Mapping[str, float] = field(default_factory=dict)
    # A cumulative register (meter index, energy) never decreases.
    cumulative: bool = False

    def to_canonical(self, value: float, unit: str | None) -> float:
        """Convert ``value`` given in ``unit`` (None: already canonical) to the canonical unit.

        Raises KeyError for a unit this quantity does not accept.
        """
        return convert(value, unit, self.unit, self.accepted)

    def accepts(self, unit: str | None) -> bool:
        return unit is None or unit == self.unit or unit in self.accepted


@dataclass(frozen=True, slots=True)
class Bounds:
    """Plausible range of a quantity for one kind of sensor, in the canonical unit."""

    low: float = -math.inf
    high: float = math.inf

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class SensorKind:
    name: str
    domain: Domain
    description: str
    # quantity name -> plausible bounds for this kind
    quantities: Mapping[str, Bounds]
    # Default nominal reporting interval; the registry may set another per sensor.
    interval_s: float = 60.0
    # The quantity a sensor's rated maximum (registry ``rated_max``) bounds, if any: the rate
    # (flow, power), never a cumulative register or a voltage.
    rated: str | None = None
    # Whether a sensor of this kind is a smart meter (reads itself and reports, ICT-1) unless
    # the registry says otherwise; None: the notion does not apply (not a meter).
    smart: bool | None = None

    def quantity(self, name: str) -> Quantity:
        return QUANTITIES[name]


def _q(
    key: int, name: str, unit: str, description: str, cumulative: bool = False, **accepted: float
) -> Quantity:
    # Keyword names cannot hold '/', so accepted units come as a mapping built by the caller.
    return Quantity(key, name, unit, description, MappingProxyType(dict(accepted)), cumulative)


_QUANTITY_LIST: tuple[Quantity, ...] = (
    Quantity(
        1,
        "flow",
        "m3/s",
        "volumetric flow (DMA inflow)",
        MappingProxyType({"l/s": 0.001, "m3/h": 1 / 3600}),
    ),
    Quantity(
        2,
        "index",
        "m3",
        "customer water meter index (cumulative volume)",
        MappingProxyType({"l": 0.001}),
        cumulative=True,
    ),
    Quantity(
        3,
        "pressure",
        "Pa",
        "water pressure",
        MappingProxyType({"bar": 100_000.0, "hPa": 100.0, "kPa": 1000.0}),
    ),
    Quantity(4, "ph", "pH", "acidity"),
    Quantity(5, "turbidity", "NTU", "turbidity"),
    Quantity(6, "chlorine", "mg/l", "free chlorine"),
    Quantity(7, "temperature", "Cel", "temperature"),
    Quantity(8, "power", "W", "active power (export negative)", MappingProxyType({"kW": 1000.0})),
    Quantity(
        9,
        "energy",
        "J",
        "energy register (cumulative)",
        MappingProxyType({"kWh": 3.6e6, "Wh": 3600.0}),
        cumulative=True,
    ),
    Quantity(10, "voltage", "V", "phase voltage"),
    Quantity(11, "fill", "/", "container fill level (ratio)", MappingProxyType({"%": 0.01})),
    Quantity(12, "count", "count", "vehicles counted in the reporting interval"),
    Quantity(
        13,
        "speed",
        "m/s",
        "mean vehicle speed in the interval",
        MappingProxyType({"km/h": 1 / 3.6}),
    ),
    Quantity(14, "occupancy", "/", "detector occupancy (ratio)", MappingProxyType({"%": 0.01})),
    Quantity(15, "pm25", "ug/m3", "PM2.5 concentration"),
    Quantity(16, "pm10", "ug/m3", "PM10 concentration"),
    Quantity(17, "no2", "ug/m3", "NO2 concentration", MappingProxyType({"ppb": 1.9})),
    Quantity(18, "laeq", "dB", "A-weighted equivalent sound level"),
    Quantity(19, "humidity", "%RH", "relative humidity"),
)

QUANTITIES: Mapping[str, Quantity] = MappingProxyType({q.name: q for q in _QUANTITY_LIST})
QUANTITIES_BY_KEY: Mapping[int, Quantity] = MappingProxyType({q.key: q for q in _QUANTITY_LIST})

# Bounds from KPIS.md; a feeder's rating is per sensor (registry), so the catalog bound is wide.
_KIND_LIST: tuple[SensorKind, ...] = (
    SensorKind(
        "water_inflow",
        Domain.WATER,
        "district-metered-area inflow meter",
        {"flow": Bounds(0.0, 2.0)},
        rated="flow",
    ),
    SensorKind(
        "water_meter",
        Domain.WATER,
        "customer water meter (cumulative index)",
        {"index": Bounds(0.0)},
        interval_s=900.0,
        smart=True,
    ),
    SensorKind(
        "water_pressure", Domain.WATER, "network pressure sensor", {"pressure": Bounds(0.0, 1.6e6)}
    ),
    SensorKind(
        "water_quality",
        Domain.WATER,
        "drinking-water quality station",
        {
            "ph": Bounds(0.0, 14.0),
            "turbidity": Bounds(0.0, 1000.0),
            "chlorine": Bounds(0.0, 10.0),
            "temperature": Bounds(0.0, 40.0),
        },
        interval_s=300.0,
    ),
    SensorKind(
        "electricity_meter",
        Domain.ENERGY,
        "household or building smart meter",
        {"power": Bounds(-50_000.0, 50_000.0), "energy": Bounds(0.0)},
        interval_s=900.0,
        rated="power",
        smart=True,
    ),
    SensorKind(
        "feeder_meter",
        Domain.ENERGY,
        "distribution feeder meter",
        {"power": Bounds(-50e6, 50e6), "voltage": Bounds(0.0, 300.0), "energy": Bounds(0.0)},
        rated="power",
    ),
    SensorKind(
        "solar_inverter",
        Domain.ENERGY,
        "rooftop photovoltaic inverter",
        {"power": Bounds(0.0, 1e6), "energy": Bounds(0.0)},
        interval_s=300.0,
        rated="power",
    ),
    SensorKind(
        "waste_container",
        Domain.WASTE,
        "container fill-level sensor",
        {"fill": Bounds(0.0, 1.2), "temperature": Bounds(-40.0, 120.0)},
        interval_s=900.0,
    ),
    SensorKind(
        "traffic_counter",
        Domain.TRAFFIC,
        "inductive loop counter and speed detector",
        {"count": Bounds(0.0), "speed": Bounds(0.0, 70.0), "occupancy": Bounds(0.0, 1.0)},
    ),
    SensorKind(
        "air_quality",
        Domain.ENVIRONMENT,
        "air-quality station",
        {
            "pm25": Bounds(0.0, 1000.0),
            "pm10": Bounds(0.0, 1000.0),
            "no2": Bounds(0.0, 2000.0),
            "humidity": Bounds(0.0, 100.0),
            "temperature": Bounds(-40.0, 60.0),
        },
    ),
    SensorKind(
        "noise", Domain.ENVIRONMENT, "road-noise sound level meter", {"laeq": Bounds(20.0, 140.0)}
    ),
)

KINDS: Mapping[str, SensorKind] = MappingProxyType({k.name: k for k in _KIND_LIST})

# ≤ 0.83 vehicles/s per lane (KPIS.md): the count bound depends on the sensor's lanes and interval.
MAX_VEHICLES_PER_LANE_SECOND = 0.83


def _check_catalog() -> None:
    keys = [q.key for q in _QUANTITY_LIST]
    if len(set(keys)) != len(keys) or any(k <= 0 or k > 32767 for k in keys):
        raise RuntimeError("quantity keys must be unique smallints > 0")
    for kind in _KIND_LIST:
        unknown = set(kind.quantities) - set(QUANTITIES)
        if unknown:
            raise RuntimeError(f"kind {kind.name} names unknown quantities {sorted(unknown)}")


_check_catalog()
