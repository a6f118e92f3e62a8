"""Registry and settings quantities given with their unit, converted and checked for plausibility.

A value with a physical unit may be given three ways, everywhere (manifest, CSV, API, CLI):

* a bare number, read in the canonical unit (``13.9`` for a free-flow speed is m/s);
* a string with the unit after the number (``"50 km/h"``, ``"1.2 km"``), the form a CSV cell
  or a command line takes;
* an object ``{"value": 50, "unit": "km/h"}``, the form a program sends.

Units are those of the kind catalog (``gateway.kinds``); the value is stored in the canonical
unit. A value outside the attribute's plausible range is refused with the reason, which names
the range and suggests giving the unit: the usual mistake is a number meant in another unit
(a free-flow speed of 50 meant as km/h is 180 km/h as m/s). The ranges are the registry's
(:data:`ATTRIBUTES`, :func:`rating_of`), not the field's: the gateway never sees them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.kinds import QUANTITIES, Bounds, SensorKind, convert


@dataclass(frozen=True, slots=True)
class Attribute:
    """A registry attribute with a physical unit: the canonical unit it is stored in, the units
    converted into it, and the plausible range (canonical unit) outside which a value is a
    registration mistake (most often a value given in another unit), not a road or a pipe."""

    name: str
    unit: str
    accepted: Mapping[str, float]
    bounds: Bounds
    # The range in words, as a refusal shows it.
    plausible: str

    def units(self) -> list[str]:
        return [self.unit, *self.accepted]


def _attribute(
    name: str, unit: str, accepted: Mapping[str, float], bounds: tuple[float, float], plausible: str
) -> Attribute:
    low, high = bounds
    return Attribute(name, unit, MappingProxyType(dict(accepted)), Bounds(low, high), plausible)


# Registry attributes with a unit that does not depend on the sensor's kind. Speed conversions
# are the speed quantity's, so a registry speed and a measured speed convert alike.
ATTRIBUTES: Mapping[str, Attribute] = MappingProxyType(
    {
        a.name: a
        for a in (
            _attribute(
                "free_flow_speed",
                "m/s",
                QUANTITIES["speed"].accepted,
                (5 / 3.6, 150 / 3.6),
                "5 to 150 km/h (1.39 to 41.67 m/s)",
            ),
            _attribute("segment_length_m", "m", {"km": 1000.0}, (1.0, 50_000.0), "1 m to 50 km"),
            _attribute(
                "interval_s", "s", {"min": 60.0, "h": 3600.0}, (1.0, 86_400.0), "1 s to 1 day"
            ),
            _attribute(
                "area_km2",
                "km2",
                {"m2": 1e-6, "ha": 0.01},
                (1e-4, 100_000.0),
                "100 m2 to 100,000 km2",
            ),
        )
    }
)


def rating_of(kind: SensorKind) -> Attribute | None:
    """The unit and plausible range of a sensor's ``rated_max`` for its kind; None when the
    kind has no rating. A rating bounds the kind's rated quantity, the only one ingestion
    clamps to it, so its unit is that quantity's and its ceiling the kind's catalog bound."""
    if kind.rated is None:
        return None
    quantity = QUANTITIES[kind.rated]
    high = kind.quantities[kind.rated].high
    return _attribute(
        "rated_max",
        quantity.unit,
        quantity.accepted,
        # Above zero: a rating of nothing is no rating.
        (math.ulp(0.0), high),
        f"above 0 and at most {high:,.10g} {quantity.unit} for a {kind.name} sensor",
    )


# A number, then optionally a unit (anything but spaces, e.g. km/h, m3/h, %).
_WITH_UNIT = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S+)?\s*")

# JSON schema of a value with a unit, for the OpenAPI document.
MEASURE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "description": "in the canonical unit"},
        {"type": "string", "description": 'the number then the unit, e.g. "50 km/h"'},
        {
            "type": "object",
            "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
            "required": ["value"],
            "additionalProperties": False,
        },
        {"type": "null"},
    ]
}


class MeasureError(ValueError):
    """The value is not a measure, names a unit not accepted, or is implausible."""


def split(raw: Any) -> tuple[float, str | None]:
    """The number and unit of ``raw`` (unit None: the canonical unit), not yet checked."""
    if isinstance(raw, bool):
        raise MeasureError("a number, not true or false")
    if isinstance(raw, int | float):
        number, unit = float(raw), None
    elif isinstance(raw, str):
        match = _WITH_UNIT.fullmatch(raw)
        if match is None:
            raise MeasureError(f'{raw!r} is not a number with an optional unit, e.g. "50 km/h"')
        number, unit = float(match.group(1)), match.group(2)
    elif isinstance(raw, dict) and "value" in raw and set(raw) <= {"value", "unit"}:
        value, unit = raw["value"], raw.get("unit")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MeasureError('"value" must be a number')
        if unit is not None and not isinstance(unit, str):
            raise MeasureError('"unit" must be a string')
        number = float(value)
    else:
        raise MeasureError('a number, "<number> <unit>" or {"value": <number>, "unit": "<unit>"}')
    if not math.isfinite(number):
        raise MeasureError("must be a finite number")
    return number, unit


def measure(raw: Any, attribute: Attribute) -> float:
    """``raw`` in ``attribute``'s canonical unit; MeasureError saying why it cannot be."""
    number, unit = split(raw)
    try:
        # 12 significant digits: "95 %" is stored 0.95, not 0.9500000000000001.
        value = float(f"{convert(number, unit, attribute.unit, attribute.accepted):.12g}")
    except KeyError:
        raise MeasureError(
            f"unit {unit!r} is not accepted; one of {', '.join(attribute.units())}"
        ) from None
    if not attribute.bounds.contains(value):
        given = f"{number:g}{_label(unit or attribute.unit)}"
        shown = (
            given
            if unit in (None, attribute.unit)
            else f"{given} = {value:g}{_label(attribute.unit)}"
        )
        hint = (
            f"; a number without a unit is in{_label(attribute.unit)}: give the unit if you meant "
            f"another (one of {', '.join(attribute.units())})"
            if unit is None
            else ""
        )
        raise MeasureError(f"{shown} is implausible: expected {attribute.plausible}{hint}")
    return value


def _label(unit: str) -> str:
    # SenML's "/" (a ratio) reads badly after a number.
    return " (ratio)" if unit == "/" else f" {unit}"
