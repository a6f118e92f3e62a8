"""How a resolved SenML name maps to a sensor and a quantity.

A reading's resolved name (RFC 8428 §4.5.1) is ``<sensor_id>/<quantity>``, e.g.
``wat-dma-0001/flow``: gateways put ``<sensor_id>/`` in the base name and the quantity in the
name, so a pack from one sensor repeats nothing. Sensor ids therefore never contain ``/``.
"""

from __future__ import annotations

import re

SEPARATOR = "/"
SENSOR_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def reading_name(sensor_id: str, quantity: str) -> str:
    return f"{sensor_id}{SEPARATOR}{quantity}"


def split_name(name: str) -> tuple[str, str] | None:
    """``(sensor_id, quantity)`` of a resolved name, or None when it does not follow the scheme."""
    sensor_id, sep, quantity = name.rpartition(SEPARATOR)
    if not sep or not quantity or not SENSOR_ID_PATTERN.fullmatch(sensor_id):
        return None
    return sensor_id, quantity


def is_valid_sensor_id(sensor_id: str) -> bool:
    return SENSOR_ID_PATTERN.fullmatch(sensor_id) is not None
