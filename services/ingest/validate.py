"""Per-record validation of resolved SenML records against the registry and the kind catalog.

Pure: records and a registry snapshot in, rows to store and rejects to quarantine out. A bad
record never spoils its pack: the good records of the same pack are still stored.

How old a reading may be is its series' raw retention (``retention_policies``, issue 16): a
reading the retention would remove at once cannot be kept, and one within a longer policy is
kept even past the default. The snapshot carries it per sensor and quantity
(:func:`raw_kept`, resolved once per domain and kind when the snapshot loads); a sensor without
it (a snapshot made by hand) falls back to ``Policy.max_age_s``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from gateway.kinds import KINDS, MAX_VEHICLES_PER_LANE_SECOND, QUANTITIES, Quantity
from gateway.names import split_name
from gateway.senml import Record
from services.storage.retention_policy import Key, resolve
from services.storage.retention_policy import Policy as RetentionPolicy
from services.storage.writer import ExtraReading, Reading

if TYPE_CHECKING:  # the settings only as a type: the validator stays free of their loading
    from services.settings import Settings


class Reason(StrEnum):
    """Why a record (or a whole message) was quarantined instead of stored."""

    # the message
    NOT_SENML = "not_senml"  # followed by the codec's own reason in the detail
    BAD_TOPIC = "bad_topic"
    BAD_STATUS = "bad_status"
    # the record
    BAD_NAME = "bad_name"  # not <sensor_id>/<quantity>
    UNKNOWN_SENSOR = "unknown_sensor"
    SENSOR_PENDING = "sensor_pending"  # auto-registered: an engineer sets its kind, then replays
    SENSOR_RETIRED = "sensor_retired"
    WRONG_GATEWAY = "wrong_gateway"
    UNKNOWN_QUANTITY = "unknown_quantity"
    WRONG_UNIT = "wrong_unit"
    OUT_OF_RANGE = "out_of_range"
    TIME_IN_FUTURE = "time_in_future"
    TIME_TOO_OLD = "time_too_old"
    BAD_STRING = "bad_string"
    # the batch: PostgreSQL refused it for a reason validation did not foresee
    STORAGE_ERROR = "storage_error"
    # what one message may cost (gateway/limits.py, services/ingest/quarantine.py)
    PACK_TOO_LARGE = "pack_too_large"  # more bytes than MAX_PACK_BYTES: the first kept
    TOO_MANY_RECORDS = "too_many_records"  # records past MAX_PACK_RECORDS, not looked at
    TOO_MANY_REJECTS = "too_many_rejects"  # rejected records past the per-message entries
    # a reading whose key is stored with another value: the first stays, this one waits here
    CONFLICT = "conflict"


DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class RawKept:
    """How long the raw readings of one quantity of a sensor are kept, and which retention
    policy says so ("default", "kind electricity_meter", "quantity energy"...)."""

    quantity: str
    days: int
    policy: str


def raw_kept(
    policies: Mapping[Key, RetentionPolicy], domain: str, kind: str
) -> tuple[RawKept, ...]:
    """The raw retention of each quantity a sensor of ``domain`` and ``kind`` measures."""
    found = KINDS.get(kind)
    out = []
    for quantity in found.quantities if found else ():
        chosen = resolve(policies, domain, kind, quantity)
        label = chosen.scope if chosen.scope == "default" else f"{chosen.scope} {chosen.name}"
        out.append(RawKept(quantity, chosen.raw_days, label))
    return tuple(out)


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
    # Per quantity, from the retention policies; empty: ``Policy.max_age_s`` for all.
    raw_kept: tuple[RawKept, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    index: int
    sensor_id: str | None
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Policy:
    # Clock skew tolerated into the future. Seconds: minutes let a spoofer store values ahead
    # of the real readings (URBANPULSE_MAX_FUTURE_SKEW).
    max_future_s: float = 10.0
    # The retention window of a sensor whose snapshot does not say its own (``Sensor.raw_kept``).
    max_age_s: float = 400 * DAY_S


def policy(settings: Settings) -> Policy:
    """The policy the settings give: the worker validates and a replay re-validates with it.
    URBANPULSE_RETENTION is only the window of a sensor the snapshot gives no retention of its
    own (``Sensor.raw_kept``); the sensor directory gives every sensor its policies'."""
    return Policy(
        max_future_s=settings.max_future_skew.total_seconds(),
        max_age_s=settings.retention.total_seconds(),
    )


@dataclass(slots=True)
class Validated:
    rows: list[Reading] = field(default_factory=list)
    extras: list[ExtraReading] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class Validator:
    """Validation with the registry lookups of each (gateway, name) resolved once.

    Parsing a name, finding its sensor, checking ownership and the kind, and working out the
    bounds are the same for every reading of a name; only time, unit and value change. Call
    ``clear()`` when the registry snapshot changes.
    """

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._cache: dict[str, dict[str, _Target | Reject]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def validate(
        self,
        gateway_id: str,
        records: Sequence[Record],
        sensors: Mapping[str, Sensor],
        received_at: float,
    ) -> Validated:
        out = Validated()
        latest = received_at + self.policy.max_future_s
        max_age_s = self.policy.max_age_s
        names = self._cache.setdefault(gateway_id, {})
        rows, rejects = out.rows, out.rejects
        for index, record in enumerate(records):
            target = names.get(record.name)
            if target is None:
                target = names[record.name] = _resolve(gateway_id, record.name, sensors, max_age_s)
            if isinstance(target, Reject):
                rejects.append(replace(target, index=index))
                continue
            time = record.time
            earliest = received_at - target.max_age_s
            if not earliest <= time <= latest:
                reason = Reason.TIME_IN_FUTURE if time > latest else Reason.TIME_TOO_OLD
                rejects.append(
                    Reject(
                        index,
                        target.sensor.id,
                        reason,
                        f"time {time:.3f} outside [{earliest:.0f}, {latest:.0f}]"
                        + (target.kept if reason is Reason.TIME_TOO_OLD else ""),
                    )
                )
                continue
            value = record.value
            if value is None:
                reject = _extra(index, record, target, out)
            elif record.unit is None or record.unit == target.quantity.unit:
                # The common case, kept free of calls.
                if target.low <= value <= target.high:
                    rows.append((time, target.sensor.key, target.quantity.key, value))
                    continue
                reject = _out_of_range(index, value, target)
            else:
                reject = _converted(index, record, value, target, rows)
            if reject is not None:
                rejects.append(reject)
        return out


def validate(
    gateway_id: str,
    records: Sequence[Record],
    sensors: Mapping[str, Sensor],
    received_at: float,
    policy: Policy = Policy(),
) -> Validated:
    """One-off validation (no cache kept between calls)."""
    return Validator(policy).validate(gateway_id, records, sensors, received_at)


@dataclass(frozen=True, slots=True)
class _Target:
    """What a name of a gateway resolves to: the sensor, the quantity, the plausible range."""

    sensor: Sensor
    quantity: Quantity
    low: float
    high: float
    max_age_s: float  # the series' raw retention
    kept: str = ""  # what a reading too old is told: the policy behind ``max_age_s``


def _resolve(
    gateway_id: str, name: str, sensors: Mapping[str, Sensor], max_age_s: float
) -> _Target | Reject:
    parts = split_name(name)
    if parts is None:
        return Reject(-1, None, Reason.BAD_NAME, f"name {name!r} is not <sensor_id>/<quantity>")
    sensor_id, quantity_name = parts
    sensor = sensors.get(sensor_id)
    if sensor is None:
        return Reject(
            -1, sensor_id, Reason.UNKNOWN_SENSOR, f"sensor {sensor_id!r} is not registered"
        )
    if sensor.status == "retired":
        return Reject(-1, sensor_id, Reason.SENSOR_RETIRED, f"sensor {sensor_id!r} is retired")
    if sensor.status == "pending":
        return Reject(
            -1,
            sensor_id,
            Reason.SENSOR_PENDING,
            f"sensor {sensor_id!r} awaits registration: set its kind, then replay",
        )
    if sensor.gateway_id is not None and sensor.gateway_id != gateway_id:
        return Reject(
            -1,
            sensor_id,
            Reason.WRONG_GATEWAY,
            f"sensor {sensor_id!r} belongs to gateway {sensor.gateway_id!r}, not {gateway_id!r}",
        )
    kind = KINDS.get(sensor.kind)
    bounds = kind.quantities.get(quantity_name) if kind else None
    if kind is None or bounds is None:
        return Reject(
            -1,
            sensor_id,
            Reason.UNKNOWN_QUANTITY,
            f"a {sensor.kind} sensor does not measure {quantity_name!r}",
        )
    high = bounds.high
    if sensor.rated_max is not None and quantity_name == kind.rated:
        high = min(high, sensor.rated_max)
    if quantity_name == "count" and sensor.lanes:
        high = min(high, MAX_VEHICLES_PER_LANE_SECOND * sensor.lanes * sensor.interval_s)
    kept = ""
    for series in sensor.raw_kept:
        if series.quantity == quantity_name:
            max_age_s = series.days * DAY_S
            kept = (
                f": raw {quantity_name} readings of a {sensor.kind} are kept {series.days} days "
                f"(retention policy {series.policy})"
            )
            break
    return _Target(sensor, QUANTITIES[quantity_name], bounds.low, high, max_age_s, kept)


def _extra(index: int, record: Record, target: _Target, out: Validated) -> Reject | None:
    text = record.string_value
    if text is not None and "\x00" in text:
        # PostgreSQL text cannot hold NUL; the raw payload keeps it in quarantine.
        return Reject(index, target.sensor.id, Reason.BAD_STRING, "string value contains NUL")
    out.extras.append(
        (
            record.time,
            target.sensor.key,
            target.quantity.key,
            text,
            record.bool_value,
            record.data_value,
            record.sum,
        )
    )
    return None


def _converted(
    index: int, record: Record, value: float, target: _Target, rows: list[Reading]
) -> Reject | None:
    quantity = target.quantity
    if not quantity.accepts(record.unit):
        return Reject(
            index,
            target.sensor.id,
            Reason.WRONG_UNIT,
            f"{quantity.name} is in {quantity.unit}"
            + (f" or {', '.join(quantity.accepted)}" if quantity.accepted else "")
            + f", not {record.unit!r}",
        )
    value = quantity.to_canonical(value, record.unit)
    if not target.low <= value <= target.high:
        return _out_of_range(index, value, target)
    rows.append((record.time, target.sensor.key, quantity.key, value))
    return None


def _out_of_range(index: int, value: float, target: _Target) -> Reject:
    # NaN fails every comparison and lands here too.
    return Reject(
        index,
        target.sensor.id,
        Reason.OUT_OF_RANGE,
        f"{target.quantity.name} {value:g} {target.quantity.unit} outside "
        f"[{target.low:g}, {target.high:g}]",
    )
