"""What models share: the city's clock, the scenario, the weather, aggregates of the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulators.city import District, Manifest
from simulators.models._shapes import stable_key
from simulators.scenario import Scenario
from simulators.timespec import Clock

# Households consume ~330 l a day (2.3 people at ~145 l/capita/day).
M3_PER_HOUSEHOLD_S = 0.330 / 86_400.0


@dataclass(slots=True)
class World:
    clock: Clock
    scenario: Scenario
    seed: int
    weather_key: int
    districts: dict[str, District]
    collection_hour: float
    water_loss_fraction: float
    dma_demand_m3s: dict[str, float] = field(default_factory=dict)
    """Mean billed demand of each DMA: the sum over its customer meters."""

    @classmethod
    def of(cls, manifest: Manifest, scenario: Scenario, seed: int) -> World:
        city = manifest.city
        world = cls(
            clock=Clock(city.utc_offset_s),
            scenario=scenario,
            seed=seed,
            weather_key=stable_key(seed, "weather"),
            districts={d.id: d for d in city.districts},
            collection_hour=city.collection_hour,
            water_loss_fraction=city.water_loss_fraction,
        )
        for s in manifest.sensors:
            if s.kind == "water_meter" and s.dma is not None:
                q = s.metadata["households"] * M3_PER_HOUSEHOLD_S
                world.dma_demand_m3s[s.dma] = world.dma_demand_m3s.get(s.dma, 0.0) + q
        return world

    def key(self, sensor_id: str) -> int:
        """The sensor's noise key: depends on the seed, so another seed gives another city."""
        return stable_key(self.seed, sensor_id)
