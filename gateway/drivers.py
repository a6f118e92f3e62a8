"""Sensor drivers: where a gateway's readings come from, behind one small interface.

A :class:`Driver` yields :class:`~gateway.senml.Record` values from :meth:`Driver.read` until its
source ends (a replay file) or :meth:`Driver.close` is called (from another thread). Drivers:

- ``jsonl:PATH``: replays a JSON-lines file of ``{"sensor", "quantity", "t", "v", "u"}`` objects,
  paced by their times divided by ``speed`` (0: as fast as possible);
- ``line``: the line protocol on stdin, ``<sensor_id> <quantity> <value> [unit] [epoch]``, so that
  any sensor script can feed the gateway with ``print``;
- ``simulator[:CITY]``: the simulated city's sensors attached to this gateway, from
  ``simulators.driver`` (loaded by name: the gateway does not depend on the simulators).

A line a driver cannot read is logged with its number and counted in ``bad_lines``; it never stops
the driver.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from gateway.errors import GatewayError
from gateway.names import is_valid_sensor_id, reading_name
from gateway.senml import Record

__all__ = ["Driver", "DriverError", "JsonLinesDriver", "LineDriver", "open_driver", "parse_line"]

logger = logging.getLogger(__name__)

_QUANTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


class DriverError(GatewayError, ValueError):
    """A driver spec that names no driver, or a driver that cannot start."""


@runtime_checkable
class Driver(Protocol):
    """A source of readings. ``read`` runs in one thread; ``close`` may come from another."""

    name: str
    bad_lines: int

    def read(self) -> Iterator[Record]: ...

    def close(self) -> None: ...


def _record(sensor: object, quantity: object, value: object, unit: object, t: object) -> Record:
    """A record from one reading's parts; ValueError says what is wrong with them."""
    if not isinstance(sensor, str) or not is_valid_sensor_id(sensor):
        raise ValueError(f"bad sensor id {sensor!r}")
    if not isinstance(quantity, str) or not _QUANTITY.fullmatch(quantity):
        raise ValueError(f"bad quantity {quantity!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"bad value {value!r}")
    if unit is not None and (not isinstance(unit, str) or not unit):
        raise ValueError(f"bad unit {unit!r}")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"bad time {t!r}")
    return Record(name=reading_name(sensor, quantity), time=float(t), unit=unit, value=float(value))


def parse_line(line: str, now: float) -> Record | None:
    """One line of the line protocol; None for a blank line or a ``#`` comment.

    ``<sensor_id> <quantity> <value> [unit] [epoch]``: a fourth field that is a number is the
    epoch (units are never numbers). Raises ValueError for anything else.
    """
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if not 3 <= len(fields) <= 5:
        raise ValueError(f"expected 3 to 5 fields, got {len(fields)}")
    sensor, quantity, raw_value, *rest = fields
    unit: str | None = None
    t = now
    if rest and _is_number(rest[-1]):
        t = float(rest.pop())
    if len(rest) == 1:
        unit = rest[0]
    elif rest:
        raise ValueError(f"bad epoch {rest[-1]!r}")
    try:
        value = float(raw_value)
    except ValueError:
        raise ValueError(f"bad value {raw_value!r}") from None
    return _record(sensor, quantity, value, unit, t)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Base:
    name = "driver"

    def __init__(self) -> None:
        self.bad_lines = 0
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    def _bad(self, where: str, number: int, error: Exception) -> None:
        self.bad_lines += 1
        logger.warning("driver %s: %s line %d skipped: %s", self.name, where, number, error)


class LineDriver(_Base):
    """The line protocol on a text stream (stdin by default); see :func:`parse_line`."""

    name = "line"

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.time):
        super().__init__()
        self.stream = stream if stream is not None else sys.stdin
        self.clock = clock

    def read(self) -> Iterator[Record]:
        for number, line in enumerate(self.stream, start=1):
            if self._closed.is_set():
                return
            try:
                record = parse_line(line, self.clock())
            except ValueError as exc:
                self._bad("input", number, exc)
                continue
            if record is not None:
                yield record


class JsonLinesDriver(_Base):
    """Replays a JSON-lines file; times are kept, pacing is their spacing divided by ``speed``."""

    name = "jsonl"

    def __init__(self, path: Path, speed: float = 1.0) -> None:
        super().__init__()
        if speed < 0:
            raise DriverError(f"speed must be 0 or more, got {speed}")
        if not path.is_file():
            raise DriverError(f"no replay file {path}")
        self.path = path
        self.speed = speed

    def read(self) -> Iterator[Record]:
        first: float | None = None
        wall0 = time.monotonic()
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if self._closed.is_set():
                    return
                if not line.strip():
                    continue
                try:
                    record = self._parse(line)
                except ValueError as exc:
                    self._bad(str(self.path), number, exc)
                    continue
                if self.speed > 0:
                    first = record.time if first is None else first
                    delay = wall0 + (record.time - first) / self.speed - time.monotonic()
                    if delay > 0 and self._closed.wait(delay):
                        return
                yield record

    @staticmethod
    def _parse(line: str) -> Record:
        item: Any = json.loads(line)  # JSONDecodeError is a ValueError
        if not isinstance(item, dict):
            raise ValueError("not a JSON object")
        return _record(
            item.get("sensor"), item.get("quantity"), item.get("v"), item.get("u"), item.get("t")
        )


def open_driver(spec: str, gateway_id: str, speed: float = 1.0) -> Driver:
    """The driver a spec names: ``jsonl:PATH``, ``line`` or ``simulator[:CITY]``."""
    kind, _, argument = spec.partition(":")
    if kind == "jsonl":
        if not argument:
            raise DriverError("the jsonl driver needs a file: jsonl:PATH")
        return JsonLinesDriver(Path(argument), speed)
    if kind == "line":
        return LineDriver()
    if kind == "simulator":
        try:
            module = importlib.import_module("simulators.driver")
        except ModuleNotFoundError as exc:
            raise DriverError(f"the simulator driver is not installed ({exc.name})") from exc
        driver: Driver = module.open_driver(gateway_id, argument or "small", speed or 1.0)
        return driver
    raise DriverError(f"unknown driver {spec!r}: use jsonl:PATH, line or simulator[:CITY]")
