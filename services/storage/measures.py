"""Registry and settings quantities given with their unit, converted and checked for plausibility.

A value with a physical unit may be given three ways, everywhere (manifest, CSV, API, CLI):

* a bare number, read in the canonical unit (``13.9`` for a free-flow speed is m/s);
* a string with the unit after the number (``"50 km/h"``, ``"1.2 km"``), the form a CSV cell
  or a command line takes;
* an object ``{"value": 50, "unit": "km/h"}``, the form a program sends.

Units are those of the kind catalog (``gateway.kinds``); the value is stored in the canonical
unit. A value outside the attribute's plausible range is refused with the reason, which names
the range and suggests giving the unit: the usual mistake is a number meant in another unit
(a free-flow speed of 50 meant as km/h is 180 km/h as m/s).
"""

from __future__ import annotations

import math
import re
from typing import Any

from gateway.kinds import Attribute

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
        value = float(f"{attribute.to_canonical(number, unit):.12g}")
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
