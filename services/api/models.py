"""Request and response bodies of the registry routes.

Create bodies are the manifest rows of ``services.storage.registry`` (the same checks as
``urbanpulse registry load``), with examples for the OpenAPI schema; update bodies hold the
fields a row may change; answers hold the columns the registry's tables read. A field name reaches
SQL only as a column the schema has (the registry's tables refuse any other), and
``tests/services/api/test_models.py`` checks these models against those columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from gateway.kinds import KINDS
from services.storage.measures import MEASURE_SCHEMA
from services.storage.registry import Count, DistrictRow, GatewayRow, SensorRow, json_number

# A number with an optional unit, converted and checked by the route (the unit of rated_max
# depends on the sensor's kind, which a PATCH may not carry).
RawMeasure = Annotated[float | str | dict[str, Any] | None, WithJsonSchema(MEASURE_SCHEMA)]


# JSON bodies hold what their schema says (issue 11): see services.storage.registry.Count. The
# CSV path (SensorRow) keeps the lax parsing: there every cell is text.
Latitude = Annotated[float, Field(ge=-90, le=90), BeforeValidator(json_number)]
Longitude = Annotated[float, Field(ge=-180, le=180), BeforeValidator(json_number)]
Lanes = Annotated[int, Field(ge=1, le=16), BeforeValidator(json_number)]


def _rfc3339(value: Any) -> Any:
    # Lax pydantic read "0.5" as a Unix time; the schema says date-time (RFC 3339).
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                "must be a date-time with an offset, like 2026-03-01T00:00:00Z"
            ) from None
    return value


# A time in a query (since=...): ISO 8601 / RFC 3339 with an offset, never a bare number.
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class DistrictCreate(DistrictRow):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"id": "centre", "name": "Centre", "population": 42000, "households": 19000}
            ]
        },
    )


class GatewayCreate(GatewayRow):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"id": "gw-centre-1", "district_id": "centre", "description": "roof"}]
        },
    )


class SensorCreate(SensorRow):
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    customers_served: Count | None = None
    lanes: Lanes | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "wm-0001",
                    "kind": "water_meter",
                    "gateway_id": "gw-centre-1",
                    "district_id": "centre",
                    "latitude": 45.07,
                    "longitude": 7.68,
                    "dma": "dma-1",
                }
            ]
        },
    )


class _Update(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DistrictUpdate(_Update):
    name: str | None = Field(default=None, min_length=1)
    population: Count | None = None
    households: Count | None = None
    area_km2: RawMeasure = None
    boundary: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"population": 43100}]}
    )


class GatewayUpdate(_Update):
    district_id: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"description": "moved to the mast"}]}
    )


class SensorUpdate(_Update):
    """Fields an engineer changes in the field; retiring has its own route."""

    kind: str | None = Field(default=None, description="domain follows the kind")
    gateway_id: str | None = None
    district_id: str | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    unit: str | None = None
    interval_s: RawMeasure = None
    installed_at: datetime | None = None
    status: Literal["active", "pending", "maintenance"] | None = None
    feeder: str | None = None
    customers_served: Count | None = None
    dma: str | None = None
    segment_length_m: RawMeasure = None
    free_flow_speed: RawMeasure = None
    road_class: str | None = None
    lanes: Lanes | None = None
    rated_max: RawMeasure = None
    smart: bool | None = None
    metadata: dict[str, Any] | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"status": "maintenance"},
                {"latitude": 45.071},
                {"free_flow_speed": "50 km/h"},
                {"smart": False},
            ]
        },
    )


class District(BaseModel):
    id: str
    name: str
    population: int | None
    households: int | None
    area_km2: float | None
    boundary: dict[str, Any] | None
    reference: dict[str, Any]
    created_at: datetime


class Gateway(BaseModel):
    id: str
    district_id: str | None
    description: str | None
    online: bool
    last_seen: datetime | None
    status: str = Field(examples=["active"])
    metadata: dict[str, Any]
    created_at: datetime


class Sensor(BaseModel):
    id: str = Field(examples=["wm-0001"])
    kind: str = Field(examples=["water_meter"])
    domain: str = Field(examples=["water"])
    gateway_id: str | None
    district_id: str | None
    latitude: float | None
    longitude: float | None
    unit: str | None
    interval_s: float
    installed_at: datetime | None
    retired_at: datetime | None
    status: str = Field(examples=["active"])
    feeder: str | None
    customers_served: int | None
    dma: str | None
    segment_length_m: float | None
    free_flow_speed: float | None
    road_class: str | None
    lanes: int | None
    rated_max: float | None
    smart: bool | None = Field(
        description="a smart meter (ICT-1); null for a sensor that is not a meter"
    )
    metadata: dict[str, Any]
    created_at: datetime

    @model_validator(mode="after")
    def _kind_default(self) -> Sensor:
        # The registry stores null unless a flag was given: null is the kind's default (0003).
        if self.smart is None and self.kind in KINDS:
            self.smart = KINDS[self.kind].smart
        return self


class LastReading(BaseModel):
    quantity: str = Field(examples=["index"])
    unit: str = Field(examples=["m3"])
    value: float | None = Field(description="null: nothing received yet")
    time: datetime | None


class SensorDetail(Sensor):
    last: list[LastReading] = Field(
        description="the newest value of each quantity the sensor's kind measures"
    )


class BulkResult(BaseModel):
    dry_run: bool
    districts: int = Field(examples=[2])
    gateways: int = Field(examples=[4])
    sensors: int = Field(examples=[120])
