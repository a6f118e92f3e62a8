"""Per-record validation of resolved SenML records against the registry and the kind catalog.

Pure: records and a registry snapshot in, rows to store and rejects to quarantine out. A bad
record never spoils its pack: the good records of the same pack are still stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.kinds import KINDS, MAX_VEHICLES_PER_LANE_SECOND, QUANTITIES
from gateway.names import split_name
from gateway.senml import Record
from services.storage.writer import ExtraReading, Reading


class Reason(StrEnum):
    """Why a record (or a whole message) was quarantined instead of stored."""

    # the message
    NOT_SENML = "not_senml"  # followed by the codec's own reason in the detail
    BAD_TOPIC = "bad_topic"
    BAD_STATUS = "bad_status"
    # the record
    BAD_NAME = "bad_name"  # not <sensor_id>/<quantity>
    UNKNOWN_SENSOR = "unknown_sensor"
    SENSOR_RETIRED = "sensor_retired"
    WRONG_GATEWAY = "wrong_gateway"
    UNKNOWN_QUANTITY = "unknown_quantity"
    WRONG_UNIT = "wrong_unit"
    OUT_OF_RANGE = "out_of_range"
    TIME_IN_FUTURE = "time_in_future"
    TIME_TOO_OLD = "time_too_old"
    BAD_STRING = "bad_string"


@dataclass(frozen=True, slots=True)
class Sensor:
    """What validation needs to know of a registered sensor."""

    key: int
    id: str
    kind: str
    gateway_id: str | None
    status: str = "active"
    interval_s: float = 60.0
    lanes: int | None = None
    rated_max: float | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    index: int
    sensor_id: str | None
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Policy:
    max_future_s: float = 300.0  # clock skew tolerated into the future
    max_age_s: float = 400 * 86400.0  # the retention window: older cannot be kept anyway


@dataclass(slots=True)
class Validated:
    rows: list[Reading] = field(default_factory=list)
    extras: list[ExtraReading] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def validate(
    gateway_id: str,
    records: Sequence[Record],
    sensors: Mapping[str, Sensor],
    received_at: float,
    policy: Policy = Policy(),
) -> Validated:
    out = Validated()
    earliest = received_at - policy.max_age_s
    latest = received_at + policy.max_future_s
    for index, record in enumerate(records):
        reject = _check(
            gateway_id, index, record, sensors=sensors, earliest=earliest, latest=latest, out=out
        )
        if reject is not None:
            out.rejects.append(reject)
    return out


def _check(
    gateway_id: str,
    index: int,
    record: Record,
    *,
    sensors: Mapping[str, Sensor],
    earliest: float,
    latest: float,
    out: Validated,
) -> Reject | None:
    parts = split_name(record.name)
    if parts is None:
        return Reject(
            index, None, Reason.BAD_NAME, f"name {record.name!r} is not <sensor_id>/<quantity>"
        )
    sensor_id, quantity_name = parts
    sensor = sensors.get(sensor_id)
    if sensor is None:
        return Reject(
            index, sensor_id, Reason.UNKNOWN_SENSOR, f"sensor {sensor_id!r} is not registered"
        )
    if sensor.status == "retired":
        return Reject(index, sensor_id, Reason.SENSOR_RETIRED, f"sensor {sensor_id!r} is retired")
    if sensor.gateway_id is not None and sensor.gateway_id != gateway_id:
        return Reject(
            index,
            sensor_id,
            Reason.WRONG_GATEWAY,
            f"sensor {sensor_id!r} belongs to gateway {sensor.gateway_id!r}, not {gateway_id!r}",
        )
    kind = KINDS.get(sensor.kind)
    bounds = kind.quantities.get(quantity_name) if kind else None
    if kind is None or bounds is None:
        return Reject(
            index,
            sensor_id,
            Reason.UNKNOWN_QUANTITY,
            f"a {sensor.kind} sensor does not measure {quantity_name!r}",
        )
    quantity = QUANTITIES[quantity_name]
    if not earliest <= record.time <= latest:
        reason = Reason.TIME_IN_FUTURE if record.time > latest else Reason.TIME_TOO_OLD
        return Reject(
            index,
            sensor_id,
            reason,
            f"time {record.time:.3f} outside [{earliest:.0f}, {latest:.0f}]",
        )
    if record.value is None:
        text = record.string_value
        if text is not None and "\x00" in text:
            # PostgreSQL text cannot hold NUL; the raw payload keeps it in quarantine.
            return Reject(index, sensor_id, Reason.BAD_STRING, "string value contains NUL")
        out.extras.append(
            (
                record.time,
                sensor.key,
                quantity.key,
                text,
                record.bool_value,
                record.data_value,
                record.sum,
            )
        )
        return None
    if not quantity.accepts(record.unit):
        return Reject(
            index,
            sensor_id,
            Reason.WRONG_UNIT,
            f"{quantity_name} is in {quantity.unit}"
            + (f" or {', '.join(quantity.accepted)}" if quantity.accepted else "")
            + f", not {record.unit!r}",
        )
    value = quantity.to_canonical(record.value, record.unit)
    high = bounds.high
    if sensor.rated_max is not None:
        high = min(high, sensor.rated_max)
    if quantity_name == "count" and sensor.lanes:
        high = min(high, MAX_VEHICLES_PER_LANE_SECOND * sensor.lanes * sensor.interval_s)
    if not (bounds.low <= value <= high) or not math.isfinite(value):
        return Reject(
            index,
            sensor_id,
            Reason.OUT_OF_RANGE,
            f"{quantity_name} {value:g} {quantity.unit} outside [{bounds.low:g}, {high:g}]",
        )
    out.rows.append((record.time, sensor.key, quantity.key, value))
    return None
