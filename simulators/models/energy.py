"""Energy: household meters, feeder meters and rooftop solar, with feeder outages.

Cumulative registers (J) are closed-form integrals of the power curves, minus what would have
accrued during the scenario's outages of the meter's feeder: a register stops during an outage
and resumes where it stopped, and stays a pure function of time. During an outage a feeder
meter reads 0 W and 0 V (what SAIFI/SAIDI detect), household meters read 0 W and solar
inverters disconnect (anti-islanding).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from simulators.city import SensorSpec
from simulators.models._shapes import DAY, Diurnal, bits, cloudiness, day_length_h, noise
from simulators.models._world import World

# Household load: minimum before dawn, morning bump (~08:00), evening peak (~19:30).
LOAD = Diurnal(a1=0.35, p1=17.0, a2=0.25, p2=8.0)
# Registers count from 2020-01-01 00:00 UTC (the same epoch as the water meters).
_REGISTER_EPOCH = 1_577_836_800.0
# Mean load of a customer behind a feeder, W (about 5,000 kWh a year, diversified).
_FEEDER_W_PER_CUSTOMER = 600.0


def _register(
    integral: Callable[[float], float], gaps: list[tuple[float, float]], t: float
) -> float:
    """``F(t) - F(epoch)`` minus what ``F`` gained inside gaps that began before ``t``."""
    total = integral(t) - integral(_REGISTER_EPOCH)
    for start, end in gaps:
        if start < t:
            total -= integral(min(end, t)) - integral(start)
    return max(0.0, total)


def _gaps(world: World, feeder: str | None) -> list[tuple[float, float]]:
    if feeder is None:
        return []
    return [(w.start, w.end) for w in world.scenario.feeder_outages.get(feeder, ())]


class HouseholdMeter:
    """Power (W) and energy register (J) of a household or building."""

    quantities: tuple[str, ...] = ("power", "energy")

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._mean = float(spec.metadata.get("mean_power_w", 500.0))
        self._feeder = spec.feeder
        self._world = world
        self._key = world.key(spec.id)
        self._offset = world.clock.utc_offset_s
        self._gaps = _gaps(world, spec.feeder)

    def _integral(self, t: float) -> float:
        return self._mean * LOAD.integral(t + self._offset)

    def sample(self, t: float) -> tuple[float | None, ...]:
        energy = float(round(_register(self._integral, self._gaps, t)))  # 1 J resolution
        if self._world.scenario.feeder_down(self._feeder, t):
            return (0.0, energy)
        power = (
            self._mean * LOAD.value(t + self._offset) * (1.0 + 0.15 * noise(bits(self._key, t), 0))
        )
        return (round(max(0.0, power), 1), energy)


class FeederMeter:
    """Feeder power (W), phase voltage (V) and energy (J); all zero power/voltage in an outage."""

    quantities: tuple[str, ...] = ("power", "voltage", "energy")

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._mean = (spec.customers_served or 1) * _FEEDER_W_PER_CUSTOMER
        self._feeder = spec.feeder
        self._world = world
        self._key = world.key(spec.id)
        self._offset = world.clock.utc_offset_s
        self._gaps = _gaps(world, spec.feeder)

    def _integral(self, t: float) -> float:
        return self._mean * LOAD.integral(t + self._offset)

    def sample(self, t: float) -> tuple[float | None, ...]:
        energy = float(round(_register(self._integral, self._gaps, t)))
        if self._world.scenario.feeder_down(self._feeder, t):
            return (0.0, 0.0, energy)
        b = bits(self._key, t)
        load = LOAD.value(t + self._offset)
        power = self._mean * load * (1.0 + 0.03 * noise(b, 0))
        # Voltage sags under load: ~240 V at night, ~232 V at the evening peak.
        voltage = 236.0 - 6.0 * (load - 1.0) + 0.8 * noise(b, 2)
        return (round(power, 1), round(voltage, 2), energy)


class SolarInverter:
    """Rooftop PV: power follows the sun (zero at night, peak at solar noon) and the day's cloud.

    Solar noon is 12:00 local clock time (longitude and the equation of time are ignored).
    """

    quantities: tuple[str, ...] = ("power", "energy")

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._capacity = spec.rated_max or 4_000.0
        self._feeder = spec.feeder
        self._world = world
        self._key = world.key(spec.id)
        self._gaps = _gaps(world, spec.feeder)
        self._prefix = _daily_prefix(world.weather_key)

    def _integral(self, t: float) -> float:
        """Energy per W of capacity from the epoch's day to ``t``: closed form within the day."""
        clock = self._world.clock
        day = clock.day(t)
        weather = self._world.weather_key
        return self._capacity * (self._prefix(day) + _day_energy(weather, day, clock.hour(t)))

    def sample(self, t: float) -> tuple[float | None, ...]:
        energy = float(round(_register(self._integral, self._gaps, t)))
        if self._world.scenario.feeder_down(self._feeder, t):
            return (0.0, energy)
        clock = self._world.clock
        day = clock.day(t)
        shape = _sun(day, clock.hour(t))
        if shape <= 0.0:
            return (0.0, energy)
        cloud = cloudiness(self._world.weather_key, day)
        # Passing clouds: ±10 % minute to minute, never above the rating.
        power = self._capacity * shape * cloud * (1.0 + 0.1 * noise(bits(self._key, t), 0) / 2.45)
        return (round(min(self._capacity, max(0.0, power)), 1), energy)


def _sun(day: int, hour: float) -> float:
    """Clear-sky shape, 0-1: a half sine from sunrise to sunset, centred on 12:00."""
    length = day_length_h(day)
    x = (hour - (12.0 - length / 2.0)) / length
    return math.sin(math.pi * x) if 0.0 < x < 1.0 else 0.0


def _day_energy(weather_key: int, day: int, hour: float) -> float:
    """J per W of capacity from local midnight of ``day`` to ``hour``: the sine's integral."""
    length = day_length_h(day)
    x = min(1.0, max(0.0, (hour - (12.0 - length / 2.0)) / length))
    return cloudiness(weather_key, day) * length * 3600.0 / math.pi * (1.0 - math.cos(math.pi * x))


# Day numbers are counted from 2020-01-01 (day 18262); prefix sums per weather key are cached.
_FIRST_DAY = 18_262
_PREFIXES: dict[int, list[float]] = {}


def _daily_prefix(weather_key: int) -> Callable[[int], float]:
    sums = _PREFIXES.setdefault(weather_key, [0.0])

    def prefix(day: int) -> float:
        """Energy per W of capacity of the whole days from 2020-01-01 to ``day`` (excluded)."""
        n = day - _FIRST_DAY
        if n <= 0:
            return 0.0
        while len(sums) <= n:
            d = _FIRST_DAY + len(sums) - 1
            sums.append(sums[-1] + _day_energy(weather_key, d, 24.0))
        return sums[n]

    return prefix


__all__ = ["DAY", "LOAD", "FeederMeter", "HouseholdMeter", "SolarInverter"]
