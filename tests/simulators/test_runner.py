"""Packs: deterministic bytes, valid against the catalog, events and faults at their times."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from gateway.kinds import KINDS, MAX_VEHICLES_PER_LANE_SECOND, QUANTITIES
from gateway.names import split_name
from gateway.senml import SenMLError, decode
from simulators.city import Manifest, build_manifest, small_city
from simulators.runner import MALFORMED_PAYLOAD, MemorySink, Simulation, run
from simulators.scenario import build_scenario
from simulators.timespec import Clock
from tests.simulators.conftest import HOUR, WEDNESDAY


def _packs(manifest: Manifest, seed: int, hours: float, **kwargs: object) -> MemorySink:
    sink = MemorySink()
    scenario = kwargs.pop("scenario", None)
    run(Simulation(manifest, scenario, seed), sink, WEDNESDAY, WEDNESDAY + hours * HOUR, **kwargs)  # type: ignore[arg-type]
    return sink


def test_the_same_seed_gives_the_same_bytes(manifest: Manifest) -> None:
    first = [p.payload for p in _packs(manifest, 7, 2).packs]
    assert first == [p.payload for p in _packs(manifest, 7, 2).packs]
    assert first != [p.payload for p in _packs(manifest, 8, 2).packs]


def test_live_and_backfill_agree_on_every_reading(manifest: Manifest) -> None:
    """Values are functions of time, so batching changes the packs, not the readings."""

    def readings(sink: MemorySink) -> set[tuple[str, float, float | None]]:
        return {(r.name, r.time, r.value) for p in sink.packs for r in decode(p.payload, 0.0)}

    live = _packs(manifest, 7, 3, batch_s=60)
    backfill = _packs(manifest, 7, 3, batch_s=3600)
    assert len(backfill.packs) < len(live.packs)
    assert readings(live) == readings(backfill)


def test_every_reading_fits_the_kind_catalog() -> None:
    manifest = build_manifest(small_city(), seed=11)
    sensors = {s.id: s for s in manifest.sensors}
    sink = _packs(manifest, 11, 24)
    seen_kinds = set()
    by_time: dict[tuple[str, float], dict[str, float]] = defaultdict(dict)
    for pack in sink.packs:
        for record in decode(pack.payload, 0.0):
            parts = split_name(record.name)
            assert parts is not None
            sensor_id, quantity = parts
            sensor = sensors[sensor_id]
            kind = KINDS[sensor.kind]
            assert quantity in kind.quantities, record.name
            assert record.unit == QUANTITIES[quantity].unit
            assert record.value is not None
            assert math.isfinite(record.value)
            assert kind.quantities[quantity].contains(record.value), (record.name, record.value)
            if quantity == "count":
                assert sensor.lanes is not None
                assert (
                    record.value <= MAX_VEHICLES_PER_LANE_SECOND * sensor.lanes * sensor.interval_s
                )
            if sensor.rated_max is not None and quantity in {"flow", "power"}:
                assert record.value <= sensor.rated_max
            by_time[(sensor_id, record.time)][quantity] = record.value
            seen_kinds.add(sensor.kind)
    assert seen_kinds == set(KINDS)
    for values in by_time.values():
        if "pm25" in values:
            assert values["pm25"] <= values["pm10"]


def test_a_scenario_event_appears_at_its_time(manifest: Manifest) -> None:
    scenario = build_scenario(
        {"feeder_outage": [{"feeder": "d01-f1", "start": "+2h", "end": "+2h30m"}]},
        WEDNESDAY,
        Clock(manifest.city.utc_offset_s),
    )
    sink = _packs(manifest, 7, 4, scenario=scenario)
    volts = sorted(
        (r.time, r.value)
        for p in sink.packs
        for r in decode(p.payload, 0.0)
        if r.name == "ene-fdr-d01-0001/voltage"
    )
    zero = [t for t, v in volts if v == 0]
    assert zero[0] == WEDNESDAY + 2 * HOUR
    assert zero[-1] == WEDNESDAY + 2.5 * HOUR - 60
    assert len(zero) == 30


def test_faults_reach_the_wire(manifest: Manifest) -> None:
    clock = Clock(manifest.city.utc_offset_s)
    window = {"start": "+1h", "end": "+2h"}
    scenario = build_scenario(
        {
            "fault": [
                {"kind": "dropout", "sensor": "wat-dma-d01-0001", **window},
                {"kind": "spike", "sensor": "wat-prs-d01-0001", "factor": 10, **window},
                {"kind": "stuck", "sensor": "env-noi-d01-0001", **window},
                {"kind": "clock_skew", "sensor": "env-noi-d02-0001", "skew_s": 900, **window},
                {"kind": "duplicate", "sensor": "tra-cnt-d01-0001", **window},
                {"kind": "malformed", "sensor": "tra-cnt-d02-0001", **window},
            ]
        },
        WEDNESDAY,
        clock,
    )
    sink = _packs(manifest, 7, 3, scenario=scenario, batch_s=60)
    records = defaultdict(list)
    malformed = 0
    payloads: dict[bytes, int] = defaultdict(int)
    for pack in sink.packs:
        payloads[pack.payload] += 1
        if pack.payload == MALFORMED_PAYLOAD:
            malformed += 1
            with pytest.raises(SenMLError):
                decode(pack.payload, 0.0)
            continue
        for r in decode(pack.payload, 0.0):
            records[r.name].append((r.time - WEDNESDAY, r.value))
    inside = range(3600, 7200)
    assert not [t for t, _ in records["wat-dma-d01-0001/flow"] if t in inside]
    assert all(v > 1.6e6 for t, v in records["wat-prs-d01-0001/pressure"] if t in inside)
    assert len({v for t, v in records["env-noi-d01-0001/laeq"] if t in inside}) == 1
    skewed = [t for t, _ in records["env-noi-d02-0001/laeq"]]
    assert 3600 + 900 in skewed
    assert 3600 not in skewed
    assert malformed == 60
    assert sum(n - 1 for n in payloads.values() if n > 1) >= 60  # the duplicated packs
