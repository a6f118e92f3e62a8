"""Runs a simulated city: samples every sensor at its interval, packs SenML, hands packs to sinks.

:class:`Simulation` is the pure part: which sensors are due at a tick, their records (faults
applied), their packs' bytes; the same seed, city and scenario give the same bytes. :func:`run`
drives it in real time (``speed=1``), faster (``speed=60``: an hour a minute) or as fast as
possible (``speed=None``, a backfill), and a :class:`Sink` takes the packs: one store-and-forward
:class:`~gateway.publisher.Publisher` per gateway, each with its own outbox file
(:class:`PublisherSink`), or the outboxes alone, or memory (tests and benchmarks).

One pack per sensor per tick live; in a backfill a pack carries ``batch_s`` of one sensor's
readings (an hour by default: ~180 records, ~5 KB), since the outbox fsyncs once per pack.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Protocol

from gateway.kinds import QUANTITIES
from gateway.names import reading_name
from gateway.outbox import Outbox
from gateway.publisher import Health, Publisher, PublisherOptions
from gateway.senml import Record, encode
from simulators.city import Manifest, SensorSpec
from simulators.models import SensorModel, build_models
from simulators.scenario import Fault, FaultKind, Scenario

# What a malformed-payload fault sends: JSON, but not a SenML pack (an object, a bad label).
MALFORMED_PAYLOAD = b'{"bn": "not-a-pack", "v": '


@dataclass(slots=True)
class SimSensor:
    spec: SensorSpec
    model: SensorModel
    names: tuple[str, ...]
    units: tuple[str, ...]
    interval: int
    faults: list[Fault]


@dataclass(slots=True)
class Pack:
    gateway_id: str
    payload: bytes
    records: int
    """Readings in the pack (0 for a malformed one)."""


class Simulation:
    """The city's sensors and models, with the scenario's faults; no I/O."""

    def __init__(
        self,
        manifest: Manifest,
        scenario: Scenario | None = None,
        seed: int = 0,
        interval_s: float | None = None,
    ) -> None:
        self.manifest = manifest
        self.scenario = scenario or Scenario()
        models = build_models(manifest, self.scenario, seed)
        self.sensors: list[SimSensor] = []
        for spec in manifest.sensors:
            model = models[spec.id]
            interval = int(interval_s or spec.interval_s)
            if interval < 1:
                raise ValueError(f"{spec.id}: interval must be at least 1 s")
            self.sensors.append(
                SimSensor(
                    spec,
                    model,
                    tuple(reading_name(spec.id, q) for q in model.quantities),
                    tuple(QUANTITIES[q].unit for q in model.quantities),
                    interval,
                    self.scenario.faults.get(spec.id, []),
                )
            )
        self.step = reduce(math.gcd, (s.interval for s in self.sensors), 0) or 60
        """The tick: every sensor's interval is a multiple of it."""

    def align(self, t: float) -> int:
        """The first tick at or after ``t``."""
        return math.ceil(t / self.step) * self.step

    def records(self, sensor: SimSensor, t: int) -> list[Record]:
        """The sensor's records for tick ``t``: one per quantity with a value, faults applied."""
        when = float(t)
        sample_at = when
        factor = 1.0
        for fault in sensor.faults:
            if when not in fault.window:
                continue
            if fault.kind is FaultKind.DROPOUT:
                return []
            if fault.kind is FaultKind.STUCK:
                # The reading frozen at the window's first tick.
                sample_at = float(math.ceil(fault.window.start / sensor.interval) * sensor.interval)
            elif fault.kind is FaultKind.SPIKE:
                factor = fault.factor
            elif fault.kind is FaultKind.CLOCK_SKEW:
                when += fault.skew_s
        values = sensor.model.sample(sample_at)
        return [
            Record(name=name, time=when, unit=unit, value=value * factor)
            for name, unit, value in zip(sensor.names, sensor.units, values, strict=True)
            if value is not None
        ]

    def packs(self, start: int, end: int) -> Iterator[Pack]:
        """Packs of ticks in ``[start, end)``: one per sensor with readings, in manifest order."""
        for sensor in self.sensors:
            interval = sensor.interval
            first = math.ceil(start / interval) * interval
            records: list[Record] = []
            for t in range(first, end, interval):
                records.extend(self.records(sensor, t))
            if not records:
                continue
            yield from self._pack(sensor, records, first)

    def _pack(self, sensor: SimSensor, records: list[Record], first: int) -> Iterator[Pack]:
        gateway = sensor.spec.gateway_id
        kinds = {f.kind for f in sensor.faults if float(first) in f.window}
        if FaultKind.MALFORMED in kinds:
            yield Pack(gateway, MALFORMED_PAYLOAD, 0)
            return
        pack = Pack(gateway, encode(records), len(records))
        yield pack
        if FaultKind.DUPLICATE in kinds:
            yield pack


class Sink(Protocol):
    """Where packs go; ``depth()`` is what waits to be sent (for the progress line)."""

    def put(self, pack: Pack) -> None: ...

    def depth(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class MemorySink:
    """Keeps every pack (tests)."""

    packs: list[Pack] = field(default_factory=list)

    def put(self, pack: Pack) -> None:
        self.packs.append(pack)

    def depth(self) -> int:
        return 0

    def close(self) -> None:
        pass


class OutboxSink:
    """One outbox file per gateway in ``state_dir``, nothing published (benchmarks)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.outboxes: dict[str, Outbox] = {}

    def outbox(self, gateway_id: str) -> Outbox:
        box = self.outboxes.get(gateway_id)
        if box is None:
            box = self.outboxes[gateway_id] = Outbox(self.state_dir / f"{gateway_id}.sqlite")
        return box

    def put(self, pack: Pack) -> None:
        self.outbox(pack.gateway_id).put(f"ssc/v1/{pack.gateway_id}/up", pack.payload)

    def depth(self) -> int:
        return sum(box.depth() for box in self.outboxes.values())

    def close(self) -> None:
        for box in self.outboxes.values():
            box.close()


class PublisherSink:
    """One started :class:`Publisher` per gateway, each with its own outbox in ``state_dir``.

    Back-pressure: when a gateway's outbox holds ``max_pending`` packs, ``put`` waits for the
    publisher to drain it to half, so a backfill never outruns the broker into the outbox cap
    (whose ``drop_oldest`` policy would lose the oldest history).
    """

    def __init__(
        self,
        state_dir: Path,
        options: Callable[[str], PublisherOptions],
        max_pending: int = 2_000,
    ) -> None:
        self.state_dir = state_dir
        self.options = options
        self.max_pending = max_pending
        self.publishers: dict[str, Publisher] = {}

    def publisher(self, gateway_id: str) -> Publisher:
        publisher = self.publishers.get(gateway_id)
        if publisher is None:
            outbox = Outbox(self.state_dir / f"{gateway_id}.sqlite")
            publisher = Publisher(outbox, self.options(gateway_id))
            publisher.start()
            self.publishers[gateway_id] = publisher
        return publisher

    def put(self, pack: Pack) -> None:
        publisher = self.publisher(pack.gateway_id)
        if publisher.outbox.depth() >= self.max_pending:
            low = self.max_pending // 2
            while not publisher.wait_until(lambda h: h.outbox_depth <= low, timeout=1.0):
                pass  # the broker is away: hold the run, the outbox keeps what was put
        publisher.put(pack.payload)

    def depth(self) -> int:
        return sum(p.outbox.depth() for p in self.publishers.values())

    def health(self) -> list[Health]:
        return [p.health() for p in self.publishers.values()]

    def drain(self, timeout: float) -> bool:
        """Wait until every outbox is empty; False if one is not after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        return all(
            p.outbox.wait_empty(max(0.0, deadline - time.monotonic()))
            for p in self.publishers.values()
        )

    def close(self) -> None:
        for publisher in self.publishers.values():
            publisher.stop()
            publisher.outbox.close()


@dataclass
class Stats:
    packs: int = 0
    records: int = 0
    bytes: int = 0
    malformed: int = 0
    sim_time: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        """Readings per wall-clock second since the start."""
        return self.records / max(1e-9, time.monotonic() - self.started)


def run(
    simulation: Simulation,
    sink: Sink,
    start: float,
    end: float | None,
    *,
    speed: float | None = None,
    batch_s: float | None = None,
    on_progress: Callable[[Stats, Sink], None] | None = None,
    progress_every: float = 0.5,
    should_stop: Callable[[], bool] = lambda: False,
) -> Stats:
    """Run ticks from ``start`` to ``end`` (None: until ``should_stop``), packs into ``sink``.

    ``speed`` None runs as fast as possible (backfill); otherwise simulated time advances
    ``speed`` times as fast as the wall clock. ``batch_s`` (default: one tick live, an hour in a
    backfill) is how much of one sensor's history goes into a pack.
    """
    stats = Stats()
    step = simulation.step
    chunk = int(batch_s if batch_s is not None else (3600 if speed is None else step))
    chunk = max(step, chunk // step * step)
    t = simulation.align(start)
    stop_at = math.inf if end is None else end
    wall0 = time.monotonic()
    next_report = wall0
    while t < stop_at and not should_stop():
        if speed is not None:
            due = wall0 + (t - start) / speed
            while (delay := due - time.monotonic()) > 0 and not should_stop():
                time.sleep(min(delay, 0.25))
        upto = int(min(t + chunk, stop_at)) if end is not None else t + chunk
        upto = max(upto, t + 1)
        for pack in simulation.packs(t, upto):
            sink.put(pack)
            stats.packs += 1
            stats.records += pack.records
            stats.bytes += len(pack.payload)
            stats.malformed += pack.records == 0
        t = simulation.align(upto)
        stats.sim_time = t
        if on_progress is not None and time.monotonic() >= next_report:
            on_progress(stats, sink)
            next_report = time.monotonic() + progress_every
    if on_progress is not None:
        on_progress(stats, sink)
    return stats
