"""Bulk registration: districts, gateways and sensors from a manifest, all or nothing.

The manifest is what ``urbanpulse simulate --manifest-out`` writes and what a field engineer
prepares: ``{"districts": [...], "gateways": [...], "sensors": [...]}`` whose keys are the
registry's column names. Every row is checked (kind known, domain matching the kind, ids in the
wire contract's alphabet, references resolvable); one bad row refuses the whole load and every
bad row is reported with its section, index and reason. Loading the same manifest again changes
nothing (rows are upserted by id).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from gateway.kinds import KINDS
from gateway.names import is_valid_sensor_id
from gateway.topics import is_valid_gateway_id

from .city_settings import check_reference
from .measures import ATTRIBUTES, MEASURE_SCHEMA, measure, rating_of

# A registry number with a physical unit: a number in the canonical unit, "50 km/h" or
# {"value": 50, "unit": "km/h"} (see .measures), stored converted to the canonical unit.
Measured = Annotated[float | None, WithJsonSchema(MEASURE_SCHEMA)]

# Kinds that are meters, smart or not (ICT-1).
METER_KINDS = tuple(name for name, kind in KINDS.items() if kind.smart is not None)

# When a sensor can have been installed. Beyond being plausible, the bounds keep every stored
# instant readable: PostgreSQL takes years Python cannot hold (an offset can push 0001-01-01 or
# 9999-12-31 into year 0 or 10000 in UTC, and a session in another time zone shows year 1 UTC
# as 1 BC), after which every read of the registry failed (issue 11).
INSTALLED_FROM = datetime(1900, 1, 1, tzinfo=UTC)
INSTALLED_BEFORE = datetime(2200, 1, 1, tzinfo=UTC)


def check_installed_at(value: datetime) -> datetime:
    """``value`` in UTC (a time without an offset is UTC, whatever the server's time zone),
    within [INSTALLED_FROM, INSTALLED_BEFORE); ValueError saying why not."""
    try:
        instant = value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)
    except OverflowError:
        instant = None  # its UTC is before year 1 or after 9999
    if instant is None or not INSTALLED_FROM <= instant < INSTALLED_BEFORE:
        raise ValueError(
            f"must be from {INSTALLED_FROM:%Y-%m-%d} to before {INSTALLED_BEFORE:%Y-%m-%d} in UTC"
        )
    return instant


class FieldsError(ValueError):
    """Registry values refused: ``problems`` lists each ``(column, reason)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{column}: {reason}" for column, reason in problems))
        self.problems = problems


def check_sensor_field(kind: str | None, column: str, value: Any) -> Any:
    """Sensor ``column``'s ``value`` as stored: a value with a unit in its canonical unit and
    plausible (``rated_max`` in the unit of the kind's rating), ``smart`` only for a meter,
    ``installed_at`` as :func:`check_installed_at` keeps it; ValueError saying why not. Other
    columns, and None, pass unchanged, and so do the kind-dependent columns when ``kind`` is
    not a known kind (its own refusal says why)."""
    if value is None:
        return None
    if column in ATTRIBUTES:
        return measure(value, ATTRIBUTES[column])
    if column == "installed_at":
        return check_installed_at(value)
    found = KINDS.get(kind or "")
    if found is None:
        return value
    if column == "rated_max":
        rating = rating_of(found)
        if rating is None:
            raise ValueError(f"a {found.name} sensor has no rating")
        return measure(value, rating)
    if column == "smart" and found.smart is None:
        raise ValueError(
            f"only meters ({', '.join(METER_KINDS)}) are smart or not; a {found.name} is not"
        )
    return value


def check_sensor_fields(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (column -> value) each as :func:`check_sensor_field` stores it; FieldsError
    naming every refused one."""
    return _checked(values, lambda column, value: check_sensor_field(kind, column, value))


def check_district_field(column: str, value: Any) -> Any:
    """District ``column``'s ``value`` as stored: the area in km2 and plausible, the reference
    data with its setting overrides parsed; ValueError saying why not."""
    if column == "reference":
        # The district's overrides of city settings (peak periods...), parsed like the city's.
        return check_reference(value)
    if column in ATTRIBUTES and value is not None:
        return measure(value, ATTRIBUTES[column])
    return value


def check_district_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` each as :func:`check_district_field` stores it; FieldsError naming every
    refused one."""
    return _checked(values, check_district_field)


def _checked(values: Mapping[str, Any], check: Callable[[str, Any], Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for column, value in values.items():
        try:
            checked[column] = check(column, value)
        except ValueError as exc:
            problems.append((column, str(exc)))
    if problems:
        raise FieldsError(problems)
    return checked


def json_number(value: Any) -> Any:
    """``value`` unless it is a bool or a string: lax pydantic took `true` as the count 1 and
    "5" as 5, which a JSON body's schema refuses (schemathesis, issue 11). Not strict mode
    either: JSON Schema's integer takes 8.0."""
    if isinstance(value, bool | str):
        raise ValueError(f"must be a JSON number, not {type(value).__name__}")
    return value


# A count in a JSON body (districts come only as JSON; a CSV of sensors is text, parsed lax).
# The bound comes before the validator, or pydantic's JSON schema says "ge" for "minimum".
Count = Annotated[int, Field(ge=0), BeforeValidator(json_number)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DistrictRow(_Row):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    population: Count | None = None
    households: Count | None = None
    area_km2: Measured = None
    boundary: dict[str, Any] | None = None
    reference: dict[str, Any] = Field(default_factory=dict)

    @field_validator("area_km2", mode="before")
    @classmethod
    def _area(cls, value: Any) -> Any:
        return check_district_field("area_km2", value)

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: dict[str, Any]) -> Any:
        return check_district_field("reference", value)


class GatewayRow(_Row):
    id: str
    district_id: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not is_valid_gateway_id(value):
            raise ValueError("gateway ids are [A-Za-z0-9][A-Za-z0-9_-]{0,63}")
        return value


class SensorRow(_Row):
    id: str
    kind: str
    domain: str | None = None  # derived from the kind when absent
    gateway_id: str | None = None
    district_id: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    unit: str | None = None
    interval_s: Measured = None
    installed_at: datetime | None = None
    status: str = "active"
    feeder: str | None = None
    customers_served: int | None = Field(default=None, ge=0)
    dma: str | None = None
    segment_length_m: Measured = None
    free_flow_speed: Measured = None
    road_class: str | None = None
    lanes: int | None = Field(default=None, ge=1, le=16)
    rated_max: Measured = None
    smart: bool | None = Field(
        default=None,
        description="a meter that reads itself and reports (ICT-1); default: the kind's",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    # Before the type's own check for a measure (a string with a unit is no float yet), after
    # it for smart (a CSV "false" is a bool by then).
    @field_validator(
        "interval_s", "segment_length_m", "free_flow_speed", "rated_max", mode="before"
    )
    @classmethod
    def _measured(cls, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        return check_sensor_field(info.data.get("kind"), info.field_name, value)

    @field_validator("installed_at")
    @classmethod
    def _installed_at(cls, value: datetime | None) -> datetime | None:
        return None if value is None else check_installed_at(value)

    @field_validator("smart")
    @classmethod
    def _smart(cls, value: bool | None, info: ValidationInfo) -> Any:
        return check_sensor_field(info.data.get("kind"), "smart", value)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not is_valid_sensor_id(value):
            raise ValueError("sensor ids are [A-Za-z0-9][A-Za-z0-9_.:-]{0,127} (no '/')")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"unknown kind; one of {', '.join(sorted(KINDS))}")
        return value

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        if value not in ("active", "pending", "maintenance", "retired"):
            raise ValueError("one of active, pending, maintenance, retired")
        return value


@dataclass(frozen=True, slots=True)
class RowError:
    section: str
    index: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.section}[{self.index}]" + (f".{self.field}" if self.field else "")
        return f"{where}: {self.message}"


class ManifestError(Exception):
    """The manifest was refused; ``errors`` lists every bad row."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} bad row(s); nothing was loaded")
        self.errors = errors


@dataclass(slots=True)
class LoadResult:
    districts: int = 0
    gateways: int = 0
    sensors: int = 0
    errors: list[RowError] = field(default_factory=list)


_SECTIONS: dict[str, type[_Row]] = {
    "districts": DistrictRow,
    "gateways": GatewayRow,
    "sensors": SensorRow,
}


def parse(manifest: Any) -> tuple[list[DistrictRow], list[GatewayRow], list[SensorRow]]:
    """Check every row; raise ManifestError listing all the bad ones."""
    errors: list[RowError] = []
    if not isinstance(manifest, dict):
        raise ManifestError([RowError("manifest", 0, None, "must be a JSON object")])
    unknown = set(manifest) - set(_SECTIONS)
    errors.extend(RowError(name, 0, None, "unknown section") for name in sorted(unknown))
    parsed: dict[str, list[Any]] = {}
    for section, model in _SECTIONS.items():
        rows = manifest.get(section, [])
        if not isinstance(rows, list):
            errors.append(RowError(section, 0, None, "must be a list"))
            continue
        parsed[section] = []
        for index, row in enumerate(rows):
            try:
                parsed[section].append(model.model_validate(row))
            except ValidationError as exc:
                errors.extend(
                    RowError(section, index, ".".join(map(str, e["loc"])) or None, e["msg"])
                    for e in exc.errors()
                )
    for index, sensor in enumerate(parsed.get("sensors", [])):
        kind = KINDS.get(sensor.kind)
        if kind is not None and sensor.domain not in (None, kind.domain.value):
            errors.append(
                RowError(
                    "sensors",
                    index,
                    "domain",
                    f"a {sensor.kind} is in the {kind.domain.value} domain",
                )
            )
    _check_duplicates(parsed, errors)
    if errors:
        raise ManifestError(errors)
    return parsed["districts"], parsed["gateways"], parsed["sensors"]


def _check_duplicates(parsed: dict[str, list[Any]], errors: list[RowError]) -> None:
    for section, rows in parsed.items():
        seen: set[str] = set()
        for index, row in enumerate(rows):
            if row.id in seen:
                errors.append(RowError(section, index, "id", f"{row.id!r} appears twice"))
            seen.add(row.id)


def load(conn: psycopg.Connection[TupleRow], manifest: Any) -> LoadResult:
    """Upsert the manifest's rows in one transaction (the caller's; commits on success)."""
    districts, gateways, sensors = parse(manifest)
    errors = _check_references(conn, districts, gateways, sensors)
    if errors:
        raise ManifestError(errors)
    with conn.transaction():
        for d in districts:
            conn.execute(
                "INSERT INTO districts (id, name, population, households, area_km2, boundary, "
                "reference) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "name = excluded.name, population = excluded.population, "
                "households = excluded.households, area_km2 = excluded.area_km2, "
                "boundary = excluded.boundary, reference = excluded.reference",
                (
                    d.id,
                    d.name,
                    d.population,
                    d.households,
                    d.area_km2,
                    None if d.boundary is None else Jsonb(d.boundary),
                    Jsonb(d.reference),
                ),
            )
        for g in gateways:
            conn.execute(
                "INSERT INTO gateways (id, district_id, description, metadata) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "district_id = excluded.district_id, description = excluded.description, "
                "metadata = excluded.metadata",
                (g.id, g.district_id, g.description, Jsonb(g.metadata)),
            )
        for s in sensors:
            kind = KINDS[s.kind]
            values = s.model_dump(exclude={"metadata"})
            values["domain"] = kind.domain.value
            values["interval_s"] = s.interval_s or kind.interval_s
            columns = [*values, "metadata"]
            conn.execute(
                f"INSERT INTO sensors ({', '.join(columns)}) VALUES "  # noqa: S608 - model's own field names
                f"({', '.join(['%s'] * len(columns))}) ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id"),
                (*values.values(), Jsonb(s.metadata)),
            )
    return LoadResult(len(districts), len(gateways), len(sensors))


def _check_references(
    conn: psycopg.Connection[TupleRow],
    districts: list[DistrictRow],
    gateways: list[GatewayRow],
    sensors: list[SensorRow],
) -> list[RowError]:
    known_districts = {d.id for d in districts} | {
        r[0] for r in conn.execute("SELECT id FROM districts")
    }
    known_gateways = {g.id for g in gateways} | {
        r[0] for r in conn.execute("SELECT id FROM gateways")
    }
    errors = [
        RowError("gateways", i, "district_id", f"unknown district {g.district_id!r}")
        for i, g in enumerate(gateways)
        if g.district_id is not None and g.district_id not in known_districts
    ]
    for i, s in enumerate(sensors):
        if s.district_id is not None and s.district_id not in known_districts:
            errors.append(
                RowError("sensors", i, "district_id", f"unknown district {s.district_id!r}")
            )
        if s.gateway_id is not None and s.gateway_id not in known_gateways:
            errors.append(RowError("sensors", i, "gateway_id", f"unknown gateway {s.gateway_id!r}"))
    return errors


def read_manifest(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError([RowError("manifest", 0, None, f"not JSON: {exc}")]) from None
