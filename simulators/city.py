"""The simulated city: districts, sensor counts per kind, and the registry manifest built from it.

:func:`build_manifest` turns a :class:`City` and a seed into districts, gateways and sensors
(deterministically: a seeded ``random.Random``, consumed in a fixed order), carrying the
reference data the KPIs of ``KPIS.md`` need: feeders and customers served (SAIFI/SAIDI), DMAs
and connections (non-revenue water, ILI), road segments with length, free-flow speed, class and
lanes (travel time index, monitoring coverage), rated maxima. :func:`manifest_json` writes it
in the registry's bulk format, ``{"districts": [...], "gateways": [...], "sensors": [...]}``,
whose keys are the registry's column names (``services/storage/schema.py``, not imported: the
field side never imports the server side).
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.kinds import KINDS

# Sensor id prefix per kind: `wat-dma-d01-0001` reads as "water, DMA inflow, district d01".
ID_PREFIX: dict[str, str] = {
    "water_inflow": "wat-dma",
    "water_meter": "wat-mtr",
    "water_pressure": "wat-prs",
    "water_quality": "wat-qly",
    "electricity_meter": "ene-mtr",
    "feeder_meter": "ene-fdr",
    "solar_inverter": "ene-pv",
    "waste_container": "wst-bin",
    "traffic_counter": "tra-cnt",
    "air_quality": "env-air",
    "noise": "env-noi",
}
assert set(ID_PREFIX) == set(KINDS), "every kind of the catalog needs an id prefix"

# Households per customer water meter (a building's bulk meter): realistic DMA flows without
# simulating every flat.
_HOUSEHOLDS_PER_WATER_METER = (1, 40)
# When a manifest does not say when its sensors were installed. A run that simulates history
# passes the start of that history instead: KPIs judge a period from installation, so sensors
# "installed" long before their first reading would count as silent all that time.
DEFAULT_INSTALLED_AT = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class District:
    """A district and how many sensors of each kind it has."""

    id: str
    name: str
    population: int
    households: int
    area_km2: float
    sensors: dict[str, int]
    collection_weekdays: tuple[int, ...] = (0, 3)
    """Waste rounds (Monday = 0), at ``City.collection_hour`` local time."""
    waste_habit: float = 1.0
    """How fast this district fills its containers, relative to the city."""


@dataclass(frozen=True, slots=True)
class City:
    name: str
    districts: tuple[District, ...]
    latitude: float = 50.85
    longitude: float = 4.35
    utc_offset_s: float = 3600.0
    gateway_prefix: str = "gw"
    """Gateway ids are ``<prefix>-<district>-<domain>``; tests make it unique per test."""
    grid_renewable_fraction: float = 0.3
    collection_hour: float = 7.0
    water_loss_fraction: float = 0.12
    """Background leakage as a fraction of billed demand (non-revenue water without leaks)."""

    def sensor_count(self) -> int:
        return sum(sum(d.sensors.values()) for d in self.districts)


def _district(n: int, sensors: dict[str, int], rng: random.Random) -> District:
    households = rng.randint(4_000, 12_000)
    return District(
        id=f"d{n:02d}",
        name=f"District {n}",
        population=int(households * rng.uniform(1.9, 2.6)),
        households=households,
        area_km2=round(rng.uniform(2.0, 12.0), 2),
        sensors=dict(sensors),
        collection_weekdays=((0, 3), (1, 4), (2, 5))[n % 3],
        waste_habit=round(rng.uniform(0.8, 1.25), 3),
    )


SMALL_COUNTS = {
    "water_inflow": 1,
    "water_meter": 12,
    "water_pressure": 1,
    "water_quality": 1,
    "electricity_meter": 12,
    "feeder_meter": 2,
    "solar_inverter": 4,
    "waste_container": 10,
    "traffic_counter": 5,
    "air_quality": 1,
    "noise": 1,
}
LARGE_COUNTS = {
    "water_inflow": 2,
    "water_meter": 50,
    "water_pressure": 3,
    "water_quality": 2,
    "electricity_meter": 60,
    "feeder_meter": 4,
    "solar_inverter": 15,
    "waste_container": 40,
    "traffic_counter": 18,
    "air_quality": 3,
    "noise": 3,
}


def small_city(gateway_prefix: str = "gw") -> City:
    """Four districts, 200 sensors: every kind, quick to run and to read."""
    rng = random.Random(1)  # noqa: S311 - a simulation, not cryptography
    return City(
        "Smallville",
        tuple(_district(n, SMALL_COUNTS, rng) for n in range(1, 5)),
        gateway_prefix=gateway_prefix,
    )


def large_city(gateway_prefix: str = "gw") -> City:
    """Ten districts, 2,000 sensors: the backfill benchmark's city."""
    rng = random.Random(2)  # noqa: S311 - a simulation, not cryptography
    return City(
        "Largetown",
        tuple(_district(n, LARGE_COUNTS, rng) for n in range(1, 11)),
        gateway_prefix=gateway_prefix,
    )


def load_city(path: Path) -> City:
    """A city from TOML: top-level City fields and ``[[districts]]`` tables with ``sensors``."""
    data = tomllib.loads(path.read_text())
    districts = tuple(
        District(
            **{
                **d,
                "sensors": dict(d.get("sensors", {})),
                "collection_weekdays": tuple(d.get("collection_weekdays", (0, 3))),
            }
        )
        for d in data.pop("districts")
    )
    unknown = {k for d in districts for k in d.sensors} - set(KINDS)
    if unknown:
        raise ValueError(f"{path}: unknown sensor kinds {sorted(unknown)}")
    return City(districts=districts, **data)


def city_named(name: str, gateway_prefix: str = "gw") -> City:
    """``small``, ``large`` or the path of a TOML city file."""
    if name == "small":
        return small_city(gateway_prefix)
    if name == "large":
        return large_city(gateway_prefix)
    return load_city(Path(name))


@dataclass(slots=True)
class SensorSpec:
    """One sensor of the manifest: the registry columns plus what the models need."""

    id: str
    kind: str
    domain: str
    district_id: str
    gateway_id: str
    latitude: float
    longitude: float
    interval_s: float
    feeder: str | None = None
    customers_served: int | None = None
    dma: str | None = None
    segment_length_m: float | None = None
    free_flow_speed: float | None = None
    road_class: str | None = None
    lanes: int | None = None
    rated_max: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    installed_at: datetime = DEFAULT_INSTALLED_AT

    def row(self) -> dict[str, Any]:
        """The registry row: only the columns that are set."""
        row: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "domain": self.domain,
            "gateway_id": self.gateway_id,
            "district_id": self.district_id,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "interval_s": self.interval_s,
            "installed_at": self.installed_at.isoformat(),
            "status": "active",
        }
        for column in (
            "feeder",
            "customers_served",
            "dma",
            "segment_length_m",
            "free_flow_speed",
            "road_class",
            "lanes",
            "rated_max",
        ):
            value = getattr(self, column)
            if value is not None:
                row[column] = value
        row["metadata"] = dict(self.metadata)
        return row


@dataclass(slots=True)
class Manifest:
    city: City
    districts: list[dict[str, Any]]
    gateways: list[dict[str, Any]]
    sensors: list[SensorSpec]

    def json(self) -> dict[str, Any]:
        return {
            "districts": self.districts,
            "gateways": self.gateways,
            "sensors": [s.row() for s in self.sensors],
        }


def manifest_json(
    city: City, seed: int = 0, installed_at: datetime | None = None
) -> dict[str, Any]:
    """The registry bulk format: ``{"districts": [...], "gateways": [...], "sensors": [...]}``."""
    return build_manifest(city, seed, installed_at).json()


def build_manifest(city: City, seed: int = 0, installed_at: datetime | None = None) -> Manifest:
    """Districts, gateways (one per district and domain) and sensors of ``city``, from ``seed``.

    ``installed_at`` (timezone-aware) is when every sensor went into service: give the start of
    the history the run will simulate; None keeps :data:`DEFAULT_INSTALLED_AT`.
    """
    if installed_at is not None and installed_at.utcoffset() is None:
        raise ValueError("installed_at must carry a timezone")
    rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
    districts: list[dict[str, Any]] = []
    gateways: list[dict[str, Any]] = []
    sensors: list[SensorSpec] = []
    for index, district in enumerate(city.districts):
        # Districts on a ring around the centre, ~2 km apart (0.018° of latitude).
        centre_lat = city.latitude + 0.02 * ((index % 4) - 1.5)
        centre_lon = city.longitude + 0.03 * ((index // 4) - 1.0)
        built = _district_sensors(city, district, rng, centre_lat, centre_lon)
        if installed_at is not None:
            for spec in built:
                spec.installed_at = installed_at.astimezone(UTC)
        sensors.extend(built)
        for domain in sorted({s.domain for s in built}):
            gateways.append(
                {
                    "id": _gateway_id(city, district, domain),
                    "district_id": district.id,
                    "description": f"{district.name} {domain} gateway (simulated)",
                    "metadata": {"simulated": True},
                }
            )
        districts.append(_district_row(city, district, built))
    return Manifest(city, districts, gateways, sensors)


def _gateway_id(city: City, district: District, domain: str) -> str:
    return f"{city.gateway_prefix}-{district.id}-{domain}"


def _district_row(city: City, district: District, sensors: list[SensorSpec]) -> dict[str, Any]:
    dmas: dict[str, dict[str, Any]] = {}
    for s in sensors:
        if s.kind == "water_meter" and s.dma is not None:
            dma = dmas.setdefault(s.dma, {"connections": 0, "households": 0})
            dma["connections"] += 1
            dma["households"] += s.metadata["households"]
    for name, dma in dmas.items():
        # ~12 m of main per connection, ~8 m of private pipe: typical of a European town.
        dma["mains_km"] = round(dma["connections"] * 0.012 + 0.5, 3)
        dma["private_pipe_km"] = round(dma["connections"] * 0.008, 3)
        dma["population"] = int(dma["households"] * district.population / district.households)
        dmas[name] = dma
    feeders = {s.feeder: s.customers_served for s in sensors if s.kind == "feeder_meter"}
    return {
        "id": district.id,
        "name": district.name,
        "population": district.population,
        "households": district.households,
        "area_km2": district.area_km2,
        "reference": {
            "dmas": dmas,
            "feeders": feeders,
            "customers_served": sum(c or 0 for c in feeders.values()),
            "grid_renewable_fraction": city.grid_renewable_fraction,
            "peak_periods": [["07:00", "09:30"], ["16:00", "18:30"]],
            "overflow_threshold": 1.0,
            "collection": {
                "weekdays": list(district.collection_weekdays),
                "hour": city.collection_hour,
            },
            "utc_offset_s": city.utc_offset_s,
        },
    }


def _district_sensors(
    city: City, district: District, rng: random.Random, lat: float, lon: float
) -> list[SensorSpec]:
    counts = district.sensors
    n_dmas = max(1, counts.get("water_inflow", 0))
    n_feeders = max(1, counts.get("feeder_meter", 0))
    dma_names = [f"{district.id}-dma{i + 1}" for i in range(n_dmas)]
    feeder_names = [f"{district.id}-f{i + 1}" for i in range(n_feeders)]
    sensors: list[SensorSpec] = []
    for kind in KINDS:  # catalog order: a fixed order of draws, hence deterministic
        spec = KINDS[kind]
        for n in range(counts.get(kind, 0)):
            s = SensorSpec(
                id=f"{ID_PREFIX[kind]}-{district.id}-{n + 1:04d}",
                kind=kind,
                domain=spec.domain.value,
                district_id=district.id,
                gateway_id=_gateway_id(city, district, spec.domain.value),
                latitude=round(lat + rng.uniform(-0.008, 0.008), 6),
                longitude=round(lon + rng.uniform(-0.012, 0.012), 6),
                interval_s=spec.interval_s,
            )
            _reference(s, n=n, district=district, rng=rng, dmas=dma_names, feeders=feeder_names)
            sensors.append(s)
    return sensors


def _reference(
    s: SensorSpec,
    *,
    n: int,
    district: District,
    rng: random.Random,
    dmas: list[str],
    feeders: list[str],
) -> None:
    """Fill the KPI reference columns and the model parameters kept in ``metadata``."""
    kind = s.kind
    if kind.startswith("water_"):
        s.dma = dmas[n % len(dmas)]
    if kind == "water_inflow":
        s.rated_max = 2.0
    elif kind == "water_meter":
        s.metadata["households"] = rng.randint(*_HOUSEHOLDS_PER_WATER_METER)
        s.metadata["initial_index_m3"] = round(rng.uniform(0.0, 800.0), 3)
    elif kind == "electricity_meter":
        s.feeder = feeders[n % len(feeders)]
        s.metadata["mean_power_w"] = round(rng.uniform(250.0, 900.0), 1)
        s.rated_max = 15_000.0
    elif kind == "feeder_meter":
        s.feeder = feeders[n % len(feeders)]
        s.customers_served = district.households // len(feeders)
        # 5 kW a customer at peak, diversified: the feeder's rating.
        s.rated_max = float(s.customers_served) * 2_500.0
    elif kind == "solar_inverter":
        s.feeder = feeders[n % len(feeders)]
        s.rated_max = float(rng.choice((3_000, 4_500, 6_000, 10_000, 50_000)))
    elif kind == "waste_container":
        s.metadata["volume_l"] = rng.choice((240, 660, 1100, 3000))
        s.metadata["fill_per_day"] = round(0.22 * district.waste_habit * rng.uniform(0.8, 1.2), 4)
    elif kind == "traffic_counter":
        major = rng.random() < 0.6
        s.road_class = "major" if major else "minor"
        s.lanes = rng.choice((2, 3)) if major else 1
        s.segment_length_m = round(rng.uniform(300.0, 1500.0) if major else rng.uniform(150, 600))
        s.free_flow_speed = round((rng.choice((50.0, 70.0)) if major else 30.0) / 3.6, 2)
        # Capacity veh/s a lane (KPIS.md bound is 0.83); major roads carry more of it.
        s.metadata["peak_flow_per_lane_s"] = round(rng.uniform(0.3, 0.45) if major else 0.15, 3)
        s.metadata["segment"] = s.id
