"""The simulator as a gateway driver: this gateway's sensors of the simulated city, in real time.

Loaded by name by ``gateway.drivers.open_driver`` (``--driver simulator[:CITY]``), since the
gateway does not depend on the simulators. The city is built with its default seed, so the
sensors here are the ones the registry manifest of ``urbanpulse simulate`` lists for this gateway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from gateway.senml import Record
from simulators.city import build_manifest, city_named
from simulators.runner import Simulation

__all__ = ["SimulatorDriver", "open_driver"]


class SimulatorDriver:
    """Samples the gateway's sensors at every tick; ``speed`` > 1 runs simulated time faster."""

    name = "simulator"

    def __init__(self, simulation: Simulation, gateway_id: str, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be above 0, got {speed}")
        self.simulation = simulation
        self.gateway_id = gateway_id
        self.speed = speed
        self.sensors = [s for s in simulation.sensors if s.spec.gateway_id == gateway_id]
        self.bad_lines = 0
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    def read(self) -> Iterator[Record]:
        start = time.time()
        wall0 = time.monotonic()
        t = self.simulation.align(start)
        while not self._closed.is_set():
            delay = wall0 + (t - start) / self.speed - time.monotonic()
            if delay > 0 and self._closed.wait(delay):
                return
            for sensor in self.sensors:
                if t % sensor.interval == 0:
                    yield from self.simulation.records(sensor, t)
            t += self.simulation.step


def open_driver(gateway_id: str, city: str = "small", speed: float = 1.0) -> SimulatorDriver:
    """The driver for ``gateway_id``'s sensors in ``city`` (``small``, ``large`` or a TOML file)."""
    simulation = Simulation(build_manifest(city_named(city)))
    driver = SimulatorDriver(simulation, gateway_id, speed)
    if not driver.sensors:
        gateways = sorted({s.spec.gateway_id for s in simulation.sensors})
        raise ValueError(
            f"no sensor of city {city!r} is attached to {gateway_id!r}; its gateways: "
            + ", ".join(gateways)
        )
    return driver
