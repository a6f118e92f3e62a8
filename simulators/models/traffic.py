"""Traffic, air quality and noise: rush hours on weekdays, a midday hump at weekends.

Counters follow a flow profile scaled by lane capacity; speed falls as the road fills (so the
travel time index rises in the peaks) and collapses in an incident, when occupancy jumps.
Air quality and noise follow the district's traffic profile on top of a background.
"""

from __future__ import annotations

import math

from gateway.kinds import MAX_VEHICLES_PER_LANE_SECOND
from simulators.city import SensorSpec
from simulators.models._shapes import ambient_temperature, bits, noise
from simulators.models._world import World
from simulators.timespec import Clock

# Metres of detector plus vehicle that one vehicle keeps occupied: occupancy = q * L / v.
_EFFECTIVE_LENGTH_M = 6.5


def profile(clock: Clock, t: float) -> float:
    """Traffic flow as a fraction of the peak, 0-1."""
    h = clock.hour(t)
    if clock.weekday(t) >= 5:
        return 0.05 + 0.55 * math.exp(-(((h - 13.5) / 3.5) ** 2))
    value = (
        0.05
        + 0.95 * math.exp(-(((h - 8.0) / 1.2) ** 2))
        + 0.85 * math.exp(-(((h - 17.5) / 1.6) ** 2))
        + 0.40 * math.exp(-(((h - 13.0) / 3.0) ** 2))
    )
    return min(1.0, value)


class Counter:
    """Vehicle count per interval, mean speed (m/s, absent when nothing passed), occupancy."""

    quantities: tuple[str, ...] = ("count", "speed", "occupancy")

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._id = spec.id
        self._lanes = spec.lanes or 1
        self._interval = spec.interval_s
        self._free = spec.free_flow_speed or 13.9
        self._peak = float(spec.metadata.get("peak_flow_per_lane_s", 0.3))
        self._max_count = math.floor(MAX_VEHICLES_PER_LANE_SECOND * self._lanes * self._interval)
        self._world = world
        self._key = world.key(spec.id)

    def sample(self, t: float) -> tuple[float | None, ...]:
        p = profile(self._world.clock, t)
        severity = self._world.scenario.incident(self._id, t)
        b = bits(self._key, t)
        # An incident closes part of the road: fewer vehicles get through.
        mean = self._lanes * self._peak * p * (1.0 - 0.5 * severity) * self._interval
        count = min(self._max_count, max(0, round(mean + math.sqrt(mean) * noise(b, 0))))
        occupancy_floor = 0.5 * severity  # a queue stands on the detector
        if count == 0:
            return (0.0, None, round(occupancy_floor, 4))
        # Speed falls with the volume/capacity ratio cubed: little effect until the peak.
        speed = self._free * (1.0 - 0.45 * p**3) * (1.0 - severity) * (1.0 + 0.04 * noise(b, 2))
        speed = max(0.5, speed)
        q_lane = count / self._interval / self._lanes
        occupancy = min(1.0, q_lane * _EFFECTIVE_LENGTH_M / speed + occupancy_floor)
        return (float(count), round(speed, 2), round(occupancy, 4))


class AirQuality:
    """PM2.5, PM10, NO2 (ug/m3), humidity (%RH), temperature (Cel): traffic plus background."""

    quantities: tuple[str, ...] = ("pm25", "pm10", "no2", "humidity", "temperature")

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._world = world
        self._key = world.key(spec.id)
        self._exposure = 0.8 + 0.4 * (noise(self._key, 0) / 2.45 + 1.0) / 2.0

    def sample(self, t: float) -> tuple[float | None, ...]:
        clock = self._world.clock
        p = profile(clock, t) * self._exposure
        b = bits(self._key, t)
        winter = 0.5 + 0.5 * math.cos(2 * math.pi * ((clock.day(t) % 365.2425) / 365.2425 - 0.03))
        pm25 = max(0.5, 5.0 + 4.0 * winter + 12.0 * p + 1.2 * noise(b, 0))
        pm10 = pm25 * 1.5 + 3.0 + 4.0 * p + abs(noise(b, 1))  # coarse dust: PM10 >= PM2.5
        no2 = max(1.0, 10.0 + 45.0 * p + 3.0 * noise(b, 2))
        humidity = 72.0 + 15.0 * math.cos(2 * math.pi * (clock.hour(t) - 5.0) / 24.0)
        temperature = ambient_temperature(clock, t) + 0.3 * noise(b, 1)
        return (
            round(pm25, 2),
            round(pm10, 2),
            round(no2, 2),
            round(humidity, 1),
            round(temperature, 2),
        )


class Noise:
    """Road noise LAeq, dB: ~10 log10 of the traffic flow, plus the station's distance offset."""

    quantities: tuple[str, ...] = ("laeq",)

    def __init__(self, spec: SensorSpec, world: World) -> None:
        self._world = world
        self._key = world.key(spec.id)
        self._distance_db = 1.5 * noise(self._key, 0)

    def sample(self, t: float) -> tuple[float | None, ...]:
        vehicles_per_hour = 2_500.0 * profile(self._world.clock, t)
        level = 28.0 + 10.0 * math.log10(vehicles_per_hour + 20.0) + self._distance_db
        return (round(level + 0.8 * noise(bits(self._key, t), 1), 1),)
