"""A registry row's fields and the checks on them: pure, no database.

``DistrictRow``, ``GatewayRow`` and ``SensorRow`` are the rows a manifest, a CSV and the API's
create bodies hold. Their fields are the columns a row sets: the schema's columns but those the
registry maintains itself (``created_at``, a gateway's ``online``...), as
``tests/services/storage/registry/test_fields.py`` checks. The ``check_*`` functions are the
per-field rules the API's updates apply one field at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from gateway.kinds import KINDS
from gateway.names import is_valid_sensor_id
from gateway.topics import is_valid_gateway_id

from ..city_settings import check_reference
from ..errors import StorageError
from ..measures import ATTRIBUTES, MEASURE_SCHEMA, measure, rating_of

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


class FieldsError(StorageError, ValueError):
    """Registry values refused: ``problems`` lists each ``(column, reason)``; the API answers a
    422 naming each column as a field of the body."""

    status = 422

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{column}: {reason}" for column, reason in problems))
        self.problems = problems

    def request_fields(self) -> list[tuple[str, str]]:
        return [(f"body.{column}", reason) for column, reason in self.problems]


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


def _id_in(valid: Callable[[str], bool], alphabet: str) -> AfterValidator:
    """An id of the wire contract; ``alphabet`` says which ids ``valid`` takes."""

    def check(value: str) -> str:
        if not valid(value):
            raise ValueError(alphabet)
        return value

    return AfterValidator(check)


GatewayId = Annotated[
    str, _id_in(is_valid_gateway_id, "gateway ids are [A-Za-z0-9][A-Za-z0-9_-]{0,63}")
]
SensorId = Annotated[
    str,
    _id_in(is_valid_sensor_id, "sensor ids are [A-Za-z0-9][A-Za-z0-9_.:-]{0,127} (no '/')"),
]


class Row(BaseModel):
    """A registry row as written: no field beyond the columns."""

    model_config = ConfigDict(extra="forbid")


class DistrictRow(Row):
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


class GatewayRow(Row):
    id: GatewayId
    district_id: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SensorRow(Row):
    id: SensorId
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
