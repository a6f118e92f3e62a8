"""The city and its registry manifest."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from gateway.kinds import KINDS
from gateway.names import is_valid_sensor_id
from gateway.topics import is_valid_gateway_id
from services.storage import schema
from services.storage.registry import parse
from simulators.city import (
    DEFAULT_INSTALLED_AT,
    build_manifest,
    large_city,
    manifest_json,
    small_city,
)


def test_the_small_city_has_about_200_sensors_and_the_large_one_2000() -> None:
    assert small_city().sensor_count() == 200
    assert large_city().sensor_count() == 2000
    assert len(build_manifest(large_city()).sensors) == 2000


def test_the_manifest_covers_every_kind_in_every_district() -> None:
    manifest = build_manifest(small_city())
    for district in manifest.city.districts:
        kinds = {s.kind for s in manifest.sensors if s.district_id == district.id}
        assert kinds == set(KINDS)


def test_the_manifest_uses_the_registry_columns_and_passes_its_checks() -> None:
    data = manifest_json(small_city(), seed=3)
    for section, table in (
        ("districts", schema.districts),
        ("gateways", schema.gateways),
        ("sensors", schema.sensors),
    ):
        columns = set(table.columns.keys())
        for row in data[section]:
            assert set(row) <= columns, set(row) - columns
    districts, gateways, sensors = parse(data)
    assert (len(districts), len(gateways), len(sensors)) == (4, 20, 200)
    assert all(is_valid_sensor_id(s["id"]) for s in data["sensors"])
    assert all(is_valid_gateway_id(g["id"]) for g in data["gateways"])
    assert data["sensors"][0]["id"] == "wat-dma-d01-0001"


def test_the_manifest_carries_what_the_kpis_need() -> None:
    data = manifest_json(small_city())
    by_kind: dict[str, list[dict[str, object]]] = {}
    for row in data["sensors"]:
        by_kind.setdefault(str(row["kind"]), []).append(row)
    assert all(r["feeder"] and r["customers_served"] for r in by_kind["feeder_meter"])
    assert all(r["feeder"] for r in by_kind["electricity_meter"])
    assert all(r["dma"] for k in ("water_inflow", "water_meter") for r in by_kind[k])
    for row in by_kind["traffic_counter"]:
        assert row["segment_length_m"]
        assert row["free_flow_speed"]
        assert row["lanes"]
        assert row["road_class"] in {"major", "minor"}
    assert any(r["road_class"] == "major" for r in by_kind["traffic_counter"])
    for district in data["districts"]:
        assert district["population"] > district["households"] > 0
        reference = district["reference"]
        assert reference["dmas"]
        assert reference["customers_served"] > 0
        assert reference["peak_periods"]


def test_the_same_seed_gives_the_same_manifest_and_another_seed_another() -> None:
    same = json.dumps(manifest_json(small_city(), 1))
    assert same == json.dumps(manifest_json(small_city(), 1))
    assert same != json.dumps(manifest_json(small_city(), 2))


def test_the_sensors_are_installed_when_the_history_begins() -> None:
    # Berlin midnight, given as local time: stored in UTC, the same instant.
    begins = datetime(2026, 11, 28, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    data = manifest_json(small_city(), seed=3, installed_at=begins)
    installed = {datetime.fromisoformat(s["installed_at"]) for s in data["sensors"]}
    assert installed == {begins}
    assert {s["installed_at"] for s in data["sensors"]} == {"2026-11-27T23:00:00+00:00"}
    # The registry reads it back as given.
    _, _, sensors = parse(data)
    assert {s.installed_at for s in sensors} == {begins}
    # Without a start of history, the fixed default (manifests stay reproducible).
    default = {s["installed_at"] for s in manifest_json(small_city())["sensors"]}
    assert default == {DEFAULT_INSTALLED_AT.isoformat()}
    with pytest.raises(ValueError, match="timezone"):
        build_manifest(small_city(), installed_at=datetime(2026, 11, 28))
