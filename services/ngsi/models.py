"""Sensors' latest readings and KPI values as FIWARE Smart Data Models entities, in NGSI-LD.

Pure: every function takes plain values and returns plain JSON-ready dicts, so the API, an
export or a test can use them without a database.

Each sensor kind that a published model describes maps to that model (``MODELS``); a quantity
maps to the model's attribute, scaled into the unit the model documents (speed in km/h, humidity
as a ratio, energy in kWh). Kinds no model fits (DMA inflow, network pressure) have no entity.
An entity is rendered either *normalized* (every attribute ``{"type": "Property", "value",
"observedAt", "unitCode"}``) or *key-values* (attribute -> value), the form the models' JSON
schemas describe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol

import re2

# The NGSI-LD core context (ETSI GS CIM 009 v1.8), referenced by URL as the spec asks; clients
# resolve it, the server never fetches it.
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


def model_context(subject: str) -> str:
    """The published JSON-LD context of a Smart Data Models subject (e.g. ``dataModel.Energy``)."""
    return f"https://raw.githubusercontent.com/smart-data-models/{subject}/master/context.jsonld"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one UrbanPulse quantity goes in a model: the attribute, the factor from the
    canonical unit to the model's, the UN/CEFACT unit code, and the model's limits."""

    name: str
    scale: float = 1.0
    unit_code: str | None = None
    integer: bool = False  # the model types it as an integer
    maximum: float | None = None  # the model's upper bound (a ratio's 1)


@dataclass(frozen=True, slots=True)
class Model:
    type: str
    subject: str
    targets: Mapping[str, Target]  # quantity name -> where it goes
    # The model observes an interval (a sound level, a vehicle count): dateObservedFrom/To.
    interval: bool = False
    has_date_observed: bool = True
    constants: Mapping[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> tuple[str, str]:
        return (model_context(self.subject), CORE_CONTEXT)

    def quantity_of(self, attribute: str) -> str | None:
        """The UrbanPulse quantity behind a model attribute, or None."""
        for quantity, target in self.targets.items():
            if target.name == attribute:
                return quantity
        return None


def _model(type_: str, subject: str, targets: dict[str, Target], **kw: Any) -> Model:
    return Model(type_, subject, MappingProxyType(targets), **kw)


_CELSIUS = Target("temperature", unit_code="CEL")
_AC = {
    "power": Target("totalActivePower", unit_code="WTT"),
    "energy": Target("totalActiveEnergyImport", 1 / 3.6e6, "KWH"),
    "voltage": Target("phaseVoltage", unit_code="VLT"),
}

# sensor kind -> model. Unit codes are UN/CEFACT Common Codes, as the models document.
MODELS: Mapping[str, Model] = MappingProxyType(
    {
        "air_quality": _model(
            "AirQualityObserved",
            "dataModel.Environment",
            {
                "pm25": Target("pm25", unit_code="GQ"),
                "pm10": Target("pm10", unit_code="GQ"),
                "no2": Target("no2", unit_code="GQ"),
                "humidity": Target("relativeHumidity", 0.01, "C62", maximum=1.0),
                "temperature": _CELSIUS,
            },
        ),
        "noise": _model(
            "NoiseLevelObserved",
            "dataModel.Environment",
            {"laeq": Target("LAeq", unit_code="2N")},
            interval=True,
        ),
        "water_quality": _model(
            "WaterQualityObserved",
            "dataModel.WaterQuality",
            {
                "ph": Target("pH", unit_code="Q30"),
                "turbidity": Target("turbidity"),
                # The model has no free-chlorine attribute; ours keeps the quantity's name.
                "chlorine": Target("freeChlorine", unit_code="M1"),
                "temperature": _CELSIUS,
            },
        ),
        "water_meter": _model(
            "WaterConsumptionObserved",
            "dataModel.WaterConsumption",
            # The model's register is whole cubic metres, like a meter's dial.
            {"index": Target("waterConsumption", unit_code="MTQ", integer=True)},
            has_date_observed=False,
        ),
        "traffic_counter": _model(
            "TrafficFlowObserved",
            "dataModel.Transportation",
            {
                "count": Target("intensity", unit_code="E50"),
                "speed": Target("averageVehicleSpeed", 3.6, "KMH"),
                "occupancy": Target("occupancy", unit_code="C62", maximum=1.0),
            },
            interval=True,
        ),
        "waste_container": _model(
            "WasteContainer",
            "dataModel.WasteManagement",
            # A container past its brim (fill up to 1.2) reads full: the model's level is <= 1.
            {"fill": Target("fillingLevel", unit_code="C62", maximum=1.0), "temperature": _CELSIUS},
            has_date_observed=False,
        ),
        # A household meter and an inverter are single-phase, a feeder three-phase (the model
        # requires phaseType; the registry does not record it).
        "electricity_meter": _model(
            "ACMeasurement", "dataModel.Energy", _AC, constants={"phaseType": "singlePhase"}
        ),
        "solar_inverter": _model(
            "ACMeasurement", "dataModel.Energy", _AC, constants={"phaseType": "singlePhase"}
        ),
        "feeder_meter": _model(
            "ACMeasurement", "dataModel.Energy", _AC, constants={"phaseType": "threePhase"}
        ),
    }
)

KPI_TYPE = "KeyPerformanceIndicator"
KPI_CONTEXT = (model_context("dataModel.KeyPerformanceIndicator"), CORE_CONTEXT)
_STANDING = {"met": "good", "warning": "fair", "missed": "bad"}
_FREQUENCY = {
    "hour": "hourly",
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
    "year": "yearly",
}

ENTITY_TYPES: tuple[str, ...] = tuple(dict.fromkeys([m.type for m in MODELS.values()] + [KPI_TYPE]))


def kinds_of(entity_type: str) -> list[str]:
    """The sensor kinds served as ``entity_type``."""
    return [kind for kind, model in MODELS.items() if model.type == entity_type]


def entity_id(entity_type: str, local: str) -> str:
    return f"urn:ngsi-ld:{entity_type}:{local}"


def parse_entity_id(value: str) -> tuple[str, str] | None:
    """``(type, local id)`` of one of our entity ids, or None for any other string."""
    parts = value.split(":", 3)
    if len(parts) != 4 or parts[0] != "urn" or parts[1] != "ngsi-ld" or not parts[3]:
        return None
    if parts[2] not in ENTITY_TYPES:
        return None
    return parts[2], parts[3]


@dataclass(frozen=True, slots=True)
class Attr:
    name: str
    value: Any
    kind: str = "Property"  # or GeoProperty
    observed_at: datetime | None = None
    unit_code: str | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    id: str
    type: str
    attrs: tuple[Attr, ...]
    context: tuple[str, ...]

    def value(self, name: str) -> Any:
        for attr in self.attrs:
            if attr.name == name:
                return attr.value
        return None

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.attrs)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def render(
    entity: Entity,
    *,
    key_values: bool = False,
    attrs: Iterable[str] | None = None,
    with_context: bool = True,
) -> dict[str, Any]:
    """The entity as NGSI-LD JSON: normalized, or key-values; only ``attrs`` when given."""
    wanted = set(attrs) if attrs is not None else None
    body: dict[str, Any] = {"id": entity.id, "type": entity.type}
    for attr in entity.attrs:
        if wanted is not None and attr.name not in wanted:
            continue
        if key_values:
            body[attr.name] = attr.value
            continue
        member: dict[str, Any] = {"type": attr.kind, "value": attr.value}
        if attr.observed_at is not None:
            member["observedAt"] = _iso(attr.observed_at)
        if attr.unit_code is not None:
            member["unitCode"] = attr.unit_code
        body[attr.name] = member
    if with_context:
        body["@context"] = list(entity.context)
    return body


def convert(target: Target, value: float) -> float | int:
    """A canonical value in the model's unit and limits."""
    scaled = value * target.scale
    if target.maximum is not None:
        scaled = min(scaled, target.maximum)
    return math.floor(scaled) if target.integer else scaled


def attribute_value(target: Target, value: float) -> Any:
    """One reading as the model's attribute value."""
    if target.name == "phaseVoltage":  # the model's voltage is per phase
        return {"L1": convert(target, value)}
    return convert(target, value)


@dataclass(frozen=True, slots=True)
class Sensor:
    """What the registry knows of a sensor and its latest reading of each quantity."""

    id: str
    kind: str
    interval_s: float
    district_id: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    latest: Mapping[str, tuple[datetime, float]] = field(default_factory=dict)


def observation(sensor: Sensor) -> Entity:
    """The sensor's latest readings as its kind's model. KeyError for a kind without one."""
    model = MODELS[sensor.kind]
    attrs: list[Attr] = [Attr("name", sensor.id)]
    for quantity, target in model.targets.items():
        if quantity not in sensor.latest:
            continue
        moment, value = sensor.latest[quantity]
        attrs.append(
            Attr(
                target.name,
                attribute_value(target, value),
                observed_at=moment,
                unit_code=target.unit_code,
            )
        )
    attrs += [Attr(k, v) for k, v in model.constants.items()]
    if sensor.latitude is not None and sensor.longitude is not None:
        point = {"type": "Point", "coordinates": [sensor.longitude, sensor.latitude]}
        attrs.append(Attr("location", point, kind="GeoProperty"))
    if sensor.district_id is not None:
        attrs.append(Attr("areaServed", sensor.district_id))
    if sensor.latest:
        last = max(moment for moment, _ in sensor.latest.values())
        attrs.append(Attr("dateModified", _iso(last)))
        if model.interval:
            first = last - timedelta(seconds=sensor.interval_s)
            attrs.append(Attr("dateObservedFrom", _iso(first)))
            attrs.append(Attr("dateObservedTo", _iso(last)))
            attrs.append(Attr("dateObserved", f"{_iso(first)}/{_iso(last)}"))
        elif model.has_date_observed:
            attrs.append(Attr("dateObserved", _iso(last)))
    return Entity(entity_id(model.type, sensor.id), model.type, tuple(attrs), model.context)


@dataclass(frozen=True, slots=True)
class KpiRecord:
    """One stored KPI value (a row of ``kpi_current``)."""

    kpi_id: str
    scope: str
    period: str
    period_start: datetime
    period_end: datetime
    value: float | None
    rating: str
    computed_at: datetime
    name: str | None = None
    description: str | None = None


def kpi_entity_id(record: KpiRecord) -> str:
    return entity_id(KPI_TYPE, f"{record.kpi_id}:{record.scope}:{record.period}")


def kpi_entity(record: KpiRecord) -> Entity:
    """A KPI value as a ``KeyPerformanceIndicator``: ``kpiValue`` the value (absent when there
    was too little data), ``currentStanding`` from the rating against the target,
    ``calculationPeriod`` the period's first and last dates (UTC)."""
    last_day = record.period_end - timedelta(microseconds=1)
    attrs = [
        Attr("name", record.name or record.kpi_id),
        Attr("category", ["quantitative"]),
        Attr("calculationMethod", "automatic"),
        Attr("calculatedBy", "UrbanPulse"),
        Attr(
            "calculationPeriod",
            {"from": record.period_start.date().isoformat(), "to": last_day.date().isoformat()},
        ),
        Attr("area", record.scope),
        Attr("updatedAt", _iso(record.computed_at)),
    ]
    if record.description:
        attrs.append(Attr("description", record.description))
    if record.value is not None:
        attrs.append(Attr("kpiValue", record.value, observed_at=record.computed_at))
    if record.rating in _STANDING:
        attrs.append(Attr("currentStanding", _STANDING[record.rating]))
    if record.period in _FREQUENCY:
        attrs.append(Attr("calculationFrequency", _FREQUENCY[record.period]))
    return Entity(kpi_entity_id(record), KPI_TYPE, tuple(attrs), KPI_CONTEXT)


# --- q: the NGSI-LD query language, its simple comparisons -------------------------------------


class QueryError(ValueError):
    """A ``q`` this subset cannot read; the message says why."""


_TERM = re.compile(r"^([A-Za-z_][\w\-]*)\s*(==|!=|>=|<=|>|<)\s*(.+)$")
_NAME = re.compile(r"^[A-Za-z_][\w\-]*$")


@dataclass(frozen=True, slots=True)
class Term:
    attribute: str
    op: str | None  # None: the attribute exists
    value: float | str | None = None


def parse_q(q: str) -> tuple[Term, ...]:
    """Terms joined by ``;`` (and): ``attr==value``, ``!=``, ``>``, ``<``, ``>=``, ``<=`` with a
    number or a quoted string, or a bare ``attr`` (it exists). Or (``|``), parentheses, ranges
    and lists are not in this subset and are refused."""
    terms = []
    for raw in q.split(";"):
        part = raw.strip()
        if not part:
            raise QueryError("empty term in q")
        if any(c in part for c in "|()"):
            raise QueryError(f"{part!r}: or and parentheses are not supported")
        if _NAME.match(part):
            terms.append(Term(part, None))
            continue
        match = _TERM.match(part)
        if match is None:
            raise QueryError(f"{part!r} is not attribute, operator and value")
        name, op, text = match.groups()
        terms.append(Term(name, op, _literal(text.strip(), part)))
    return tuple(terms)


def _literal(text: str, term: str) -> float | str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    try:
        number = float(text)
    except ValueError:
        raise QueryError(f"{term!r}: a value is a number or a quoted string") from None
    if not math.isfinite(number):
        raise QueryError(f"{term!r}: the number must be finite")
    return number


def matches(entity: Entity, terms: Iterable[Term]) -> bool:
    return all(_holds(entity, term) for term in terms)


def _holds(entity: Entity, term: Term) -> bool:
    if not entity.has(term.attribute):
        return False
    if term.op is None:
        return True
    actual = entity.value(term.attribute)
    expected = term.value
    comparable = (isinstance(actual, str) and isinstance(expected, str)) or (
        isinstance(actual, (int, float))
        and not isinstance(actual, bool)
        and isinstance(expected, float)
    )
    if not comparable:
        return term.op == "!="
    if term.op == "==":
        return bool(actual == expected)
    if term.op == "!=":
        return bool(actual != expected)
    ordered: dict[str, bool] = {
        ">": actual > expected,
        "<": actual < expected,
        ">=": actual >= expected,
        "<=": actual <= expected,
    }
    return ordered[term.op]


# --- idPattern -----------------------------------------------------------------------------------

# A pattern runs against every id of a query: RE2 keeps each match linear in the id's length, and
# this keeps the pattern's own size (and RE2's compiled program) small.
MAX_ID_PATTERN = 256


def compile_id_pattern(pattern: str) -> IdPattern:
    """``idPattern`` as a compiled regular expression (matched anywhere in an id, as a broker's
    POSIX ``regexec`` does); QueryError when too long or not a regular expression RE2 takes.

    RE2, not ``re``: its matching time is linear in the id whatever the pattern, where a
    backtracking engine lets ``((a|a))*b`` or ``.*.*.*.*x`` hold the API's GIL for seconds to
    forever per id (no pattern check catches every such form). RE2 has no backreferences or
    lookaround, which ids do not need."""
    if not pattern:
        raise QueryError("idPattern is empty")
    if len(pattern) > MAX_ID_PATTERN:
        raise QueryError(f"idPattern is longer than {MAX_ID_PATTERN} characters")
    try:
        compiled: IdPattern = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if isinstance(exc.args[0], bytes) else str(exc)
        raise QueryError(f"idPattern is not a regular expression RE2 takes: {reason}") from None
    return compiled


class IdPattern(Protocol):
    """What a compiled ``idPattern`` offers its callers."""

    pattern: str

    def search(self, text: str) -> object | None: ...


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the client's 400, not a server log line
