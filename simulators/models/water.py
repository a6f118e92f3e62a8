"""Water: DMA inflow, customer meters, pressure and quality.

A DMA's inflow is its customers' demand plus background leakage plus any scenario leak, and
each customer meter's index is the integral of its share of that same demand curve, so
non-revenue water (WAT-1) computed from simulated data comes out at the city's loss fraction,
and rises when a leak raises the night flow.
"""

from __future__ import annotations

import math

from simulators.city import SensorSpec
from simulators.models._shapes import DAY, Diurnal, bits, noise
from simulators.models._world import M3_PER_HOUSEHOLD_S, World

# Morning peak (~07:30), evening shoulder, minimum ~03:30 at about half the mean.
DEMAND = Diurnal(a1=0.45, p1=13.0, a2=0.30, p2=7.5)
# Meters count from 2020-01-01 00:00 UTC: the index is continuous across runs.
_METER_EPOCH = 1_577_836_800.0


class CustomerMeter:
    """Cumulative index, m3: the closed-form integral of the household demand curve."""

    quantities: tuple[str, ...] = ("index",)

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._q = spec.metadata["households"] * M3_PER_HOUSEHOLD_S
        self._initial = float(spec.metadata.get("initial_index_m3", 0.0))
        self._offset = world.clock.utc_offset_s
        self._zero = DEMAND.integral(_METER_EPOCH + self._offset)

    def sample(self, t: float) -> tuple[float | None, ...]:
        volume = self._q * (DEMAND.integral(t + self._offset) - self._zero)
        # 0.1 l register resolution; rounding is monotonic, so the index never decreases.
        return (round(max(0.0, self._initial + volume), 4),)


class Inflow:
    """DMA inflow, m3/s: billed demand x diurnal curve + background leakage + leaks."""

    quantities: tuple[str, ...] = ("flow",)

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._dma = spec.dma or ""
        self._demand = world.dma_demand_m3s.get(self._dma, 0.0)
        self._background = self._demand * world.water_loss_fraction
        self._world = world
        self._key = world.key(spec.id)
        self._rated = spec.rated_max or 2.0

    def sample(self, t: float) -> tuple[float | None, ...]:
        local = self._world.clock.local(t)
        demand = self._demand * DEMAND.value(local) * (1.0 + 0.02 * noise(bits(self._key, t), 0))
        leak = self._world.scenario.leak_m3s(self._dma, t)
        return (round(min(self._rated, demand + self._background + leak), 7),)


class Pressure:
    """Network pressure, Pa: falls with demand (head loss) and when a leak opens."""

    quantities: tuple[str, ...] = ("pressure",)

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._dma = spec.dma or ""
        self._world = world
        self._key = world.key(spec.id)
        # Elevation differences: each sensor sits at its own static head.
        self._static = 420_000.0 + 60_000.0 * (noise(self._key, 0) / 2.45)

    def sample(self, t: float) -> tuple[float | None, ...]:
        d = DEMAND.value(self._world.clock.local(t))
        leak_l_s = self._world.scenario.leak_m3s(self._dma, t) * 1000.0
        drop = 55_000.0 * (d - 1.0) + min(100_000.0, 25_000.0 * leak_l_s)
        p = self._static - drop + 4_000.0 * noise(bits(self._key, t), 0)
        return (round(max(0.0, p), 1),)


class Quality:
    """pH, turbidity (NTU), free chlorine (mg/l) and temperature (Cel), inside WHO limits."""

    quantities: tuple[str, ...] = ("ph", "turbidity", "chlorine", "temperature")

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._world = world
        self._key = world.key(spec.id)

    def sample(self, t: float) -> tuple[float | None, ...]:
        b = bits(self._key, t)
        clock = self._world.clock
        ph = 7.45 + 0.08 * noise(b, 0)
        turbidity = 0.18 + 0.05 * abs(noise(b, 1))
        # Chlorine decays with water age: lowest after the night's slow flow.
        chlorine = 0.55 + 0.12 * math.cos(2 * math.pi * (clock.hour(t) - 14.0) / 24.0)
        chlorine += 0.03 * noise(b, 2)
        season = (clock.day(t) % 365.2425) / 365.2425
        temperature = 13.0 - 5.0 * math.cos(2 * math.pi * (season - 0.1))
        return (round(ph, 3), round(turbidity, 3), round(chlorine, 3), round(temperature, 2))


__all__ = ["DAY", "DEMAND", "CustomerMeter", "Inflow", "Pressure", "Quality"]
