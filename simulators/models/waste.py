"""Waste: container fill that rises by district habit and drops at collection rounds.

Fill since the last round is the closed-form integral of a daytime deposit curve, so the
sawtooth is a pure function of time and the round schedule; a ``missed_collection`` removes a
round, the fill keeps rising, and the container overflows (WST-1). Container temperature
follows the air and rises a little with the fill (fermentation), for the fire-risk alert.
"""

from __future__ import annotations

from simulators.city import SensorSpec
from simulators.models._shapes import Diurnal, ambient_temperature, bits, noise, uniform
from simulators.models._world import World

# Deposits happen by day (peak mid-afternoon), almost none at night.
DEPOSITS = Diurnal(a1=0.7, p1=15.0, a2=0.0, p2=0.0)
# A full container cannot read much above its lid; 1.2 and above is a sensor fault (KPIS.md).
_MAX_FILL = 1.15
_ROUND_SPREAD_H = 4.0  # a round visits its containers over four hours


class Container:
    quantities: tuple[str, ...] = ("fill", "temperature")

    def __init__(self, spec: SensorSpec, world: World) -> None:
        district = world.districts[spec.district_id]
        self._district = spec.district_id
        self._weekdays = frozenset(district.collection_weekdays)
        self._world = world
        self._key = world.key(spec.id)
        self._rate = float(spec.metadata.get("fill_per_day", 0.2)) / 86_400.0
        # Where on the round's route this container is: emptied this many hours after it starts.
        self._hour = world.collection_hour + _ROUND_SPREAD_H * uniform(self._key, 0)
        self._offset = world.clock.utc_offset_s

    def last_collection(self, t: float) -> float:
        """When the container was last emptied (the latest round not missed, at or before t)."""
        clock = self._world.clock
        today = clock.day(t)
        missed = self._world.scenario.missed_collections
        for day in range(today, today - 60, -1):
            if (day + 3) % 7 not in self._weekdays or (self._district, day) in missed:
                continue
            emptied = clock.day_start(day) + self._hour * 3600.0
            if emptied <= t:
                return emptied
        return t - 60 * 86_400.0

    def sample(self, t: float) -> tuple[float | None, ...]:
        emptied = self.last_collection(t)
        residual = 0.01 + 0.04 * uniform(bits(self._key, emptied), 1)
        rise = self._rate * (
            DEPOSITS.integral(t + self._offset) - DEPOSITS.integral(emptied + self._offset)
        )
        fill = min(_MAX_FILL, residual + rise)
        b = bits(self._key, t)
        temperature = (
            ambient_temperature(self._world.clock, t) + 1.5 + 3.0 * fill + 0.4 * noise(b, 0)
        )
        return (round(fill, 3), round(temperature, 2))
