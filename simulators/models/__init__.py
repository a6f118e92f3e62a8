"""Sensor models, one module per domain: pure functions of (sensor, time, scenario).

Each model has ``quantities`` (names from ``gateway.kinds``, in canonical units) and
``sample(t)``, returning one value per quantity, or None where the kind says a value is absent
(a speed when no vehicle passed). :func:`build_models` makes one model per sensor of a manifest.
Imports ``gateway`` and the standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from simulators.city import Manifest, SensorSpec
from simulators.models import energy, traffic, waste, water
from simulators.models._world import World
from simulators.scenario import Scenario

__all__ = ["SensorModel", "World", "build_models"]


class SensorModel(Protocol):
    quantities: tuple[str, ...]

    def sample(self, t: float) -> tuple[float | None, ...]: ...


_FACTORIES: dict[str, Callable[[SensorSpec, World], SensorModel]] = {
    "water_inflow": water.Inflow,
    "water_meter": water.CustomerMeter,
    "water_pressure": water.Pressure,
    "water_quality": water.Quality,
    "electricity_meter": energy.HouseholdMeter,
    "feeder_meter": energy.FeederMeter,
    "solar_inverter": energy.SolarInverter,
    "waste_container": waste.Container,
    "traffic_counter": traffic.Counter,
    "air_quality": traffic.AirQuality,
    "noise": traffic.Noise,
}


def build_models(manifest: Manifest, scenario: Scenario, seed: int) -> dict[str, SensorModel]:
    """One model per sensor id, in manifest order."""
    world = World.of(manifest, scenario, seed)
    return {s.id: _FACTORIES[s.kind](s, world) for s in manifest.sensors}
