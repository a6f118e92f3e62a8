"""Scenario files: events and faults injected at set times (TOML).

Events change what the city does, so the models read them: a ``leak`` raises a DMA's inflow
(its night flow, hence non-revenue water), a ``missed_collection`` skips a waste round (the
containers overflow), a ``feeder_outage`` zeroes a feeder (SAIFI/SAIDI), a ``road_incident``
drops a segment's speed and raises its occupancy. Faults change what a sensor reports, so the
runner applies them to readings and packs: ``stuck``, ``spike``, ``dropout``, ``clock_skew``,
``duplicate`` and ``malformed`` exercise the validation and quarantine paths on purpose.

Times are ISO 8601 / TOML datetimes, or relative to the run's start (``+2h``); see
``simulators/examples/scenario.toml`` for every table.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from simulators.timespec import Clock, parse_time


class FaultKind(enum.StrEnum):
    STUCK = "stuck"
    """The sensor repeats its first reading of the window."""
    SPIKE = "spike"
    """Values multiplied by ``factor``: out of the kind's bounds, so quarantined."""
    DROPOUT = "dropout"
    """Nothing is sent."""
    CLOCK_SKEW = "clock_skew"
    """Times shifted by ``skew_s`` (positive: into the future)."""
    DUPLICATE = "duplicate"
    """Every pack is published twice (idempotent storage keeps one)."""
    MALFORMED = "malformed"
    """Packs are replaced by bytes that are not SenML (quarantined whole)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class Leak:
    dma: str
    window: Window
    extra_m3s: float


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    sensor: str
    window: Window
    factor: float = 10.0
    skew_s: float = 600.0


@dataclass(slots=True)
class Scenario:
    """Resolved events and faults (absolute times); empty by default."""

    leaks: list[Leak] = field(default_factory=list)
    missed_collections: set[tuple[str, int]] = field(default_factory=set)
    """(district id, local day number) of skipped rounds."""
    feeder_outages: dict[str, list[Window]] = field(default_factory=dict)
    road_incidents: dict[str, list[tuple[Window, float]]] = field(default_factory=dict)
    """segment -> (window, severity: the fraction of speed lost)."""
    faults: dict[str, list[Fault]] = field(default_factory=dict)

    def leak_m3s(self, dma: str, t: float) -> float:
        return sum(leak.extra_m3s for leak in self.leaks if leak.dma == dma and t in leak.window)

    def feeder_down(self, feeder: str | None, t: float) -> bool:
        if feeder is None:
            return False
        return any(t in w for w in self.feeder_outages.get(feeder, ()))

    def incident(self, segment: str, t: float) -> float:
        """Severity of an incident on ``segment`` at ``t`` (0: none)."""
        return max((s for w, s in self.road_incidents.get(segment, ()) if t in w), default=0.0)

    def faults_at(self, sensor: str, t: float) -> list[Fault]:
        return [f for f in self.faults.get(sensor, ()) if t in f.window]


def load_scenario(path: Path, start: float, clock: Clock) -> Scenario:
    """Read a TOML scenario; relative times count from ``start`` (the run's first tick)."""
    return build_scenario(tomllib.loads(path.read_text()), start, clock, source=str(path))


def build_scenario(
    data: Mapping[str, Any], start: float, clock: Clock, source: str = "scenario"
) -> Scenario:
    known = {"leak", "missed_collection", "feeder_outage", "road_incident", "fault"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{source}: unknown tables {sorted(unknown)}; known: {sorted(known)}")
    scenario = Scenario()

    def window(item: Mapping[str, Any]) -> Window:
        w = Window(parse_time(item["start"], start), parse_time(item["end"], start))
        if w.end <= w.start:
            raise ValueError(f"{source}: end must be after start in {dict(item)}")
        return w

    for item in data.get("leak", ()):
        dma = item.get("dma") or f"{item['district']}-dma1"
        scenario.leaks.append(Leak(dma, window(item), float(item.get("extra_flow_l_s", 2.0)) / 1e3))
    for item in data.get("missed_collection", ()):
        day: str | date | datetime = item["day"]
        if isinstance(day, date) and not isinstance(day, datetime):
            number = (day - date(1970, 1, 1)).days
        else:
            number = clock.day(parse_time(day, start))
        scenario.missed_collections.add((item["district"], number))
    for item in data.get("feeder_outage", ()):
        scenario.feeder_outages.setdefault(item["feeder"], []).append(window(item))
    for item in data.get("road_incident", ()):
        severity = float(item.get("severity", 0.7))
        if not 0 < severity < 1:
            raise ValueError(f"{source}: road_incident severity must be in (0, 1)")
        scenario.road_incidents.setdefault(item["segment"], []).append((window(item), severity))
    for item in data.get("fault", ()):
        fault = Fault(
            FaultKind(item["kind"]),
            item["sensor"],
            window(item),
            factor=float(item.get("factor", 10.0)),
            skew_s=float(item.get("skew_s", 600.0)),
        )
        scenario.faults.setdefault(fault.sensor, []).append(fault)
    return scenario
