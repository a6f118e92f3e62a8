"""Bulk registration from a manifest: every bad row reported, nothing half-loaded, idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.kinds import KINDS
from services.storage.registry import ManifestError, load, parse

ROOT = Path(__file__).resolve().parents[4]
Conn = psycopg.Connection[tuple[object, ...]]


def _pairs(rows: list[tuple[object, ...]]) -> dict[object, object]:
    return {row[0]: row[1] for row in rows}


def _manifest() -> dict[str, Any]:
    return {
        "districts": [
            {
                "id": "d01",
                "name": "Old Town",
                "population": 12000,
                "households": 5400,
                "area_km2": 3.2,
                "reference": {"grid_renewable_fraction": 0.3},
            }
        ],
        "gateways": [{"id": "gw-d01-energy", "district_id": "d01"}],
        "sensors": [
            {
                "id": "ene-fdr-d01-01",
                "kind": "feeder_meter",
                "gateway_id": "gw-d01-energy",
                "district_id": "d01",
                "feeder": "F1",
                "customers_served": 800,
            },
            {
                "id": "wat-dma-d01-01",
                "kind": "water_inflow",
                "district_id": "d01",
                "dma": "DMA-1",
                "interval_s": 300,
                "latitude": 45.1,
                "longitude": 7.6,
            },
        ],
    }


def test_a_manifest_loads_and_loading_it_again_changes_nothing(db: Conn) -> None:
    first = load(db, _manifest())
    assert (first.districts, first.gateways, first.sensors) == (1, 1, 2)
    before = db.execute(
        "SELECT key, id, domain, interval_s, customers_served FROM sensors ORDER BY id"
    ).fetchall()
    load(db, _manifest())
    after = db.execute(
        "SELECT key, id, domain, interval_s, customers_served FROM sensors ORDER BY id"
    ).fetchall()
    assert after == before
    # Domain and the default interval come from the kind catalog.
    assert before[0][2:4] == ("energy", 60.0)
    assert before[1][2:4] == ("water", 300.0)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda m: m["sensors"][0].update(kind="toaster"), "sensors[0].kind", id="unknown-kind"
        ),
        pytest.param(
            lambda m: m["sensors"][1].update(id="wat/dma"), "sensors[1].id", id="slash-in-id"
        ),
        pytest.param(
            lambda m: m["sensors"][0].update(domain="water"),
            "sensors[0].domain",
            id="domain-of-another-kind",
        ),
        pytest.param(
            lambda m: m["sensors"][0].update(gateway_id="gw-nowhere"),
            "sensors[0].gateway_id",
            id="unknown-gateway",
        ),
        pytest.param(
            lambda m: m["sensors"][1].update(latitude=91), "sensors[1].latitude", id="latitude"
        ),
        pytest.param(
            lambda m: m["sensors"].append(dict(m["sensors"][0])), "sensors[2].id", id="duplicate"
        ),
        pytest.param(
            lambda m: m["gateways"][0].update(id="gw+1"), "gateways[0].id", id="gateway-id"
        ),
        pytest.param(
            lambda m: m["districts"][0].update(population=-1),
            "districts[0].population",
            id="population",
        ),
        pytest.param(
            lambda m: m["sensors"][0].update(colour="red"), "sensors[0].colour", id="unknown-column"
        ),
    ],
)
def test_a_bad_row_refuses_the_whole_manifest(db: Conn, mutate: Any, expected: str) -> None:
    manifest = _manifest()
    mutate(manifest)
    with pytest.raises(ManifestError) as info:
        load(db, manifest)
    assert any(str(e).startswith(expected) for e in info.value.errors), info.value.errors
    db.rollback()
    assert db.execute("SELECT count(*) FROM sensors").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM districts").fetchone() == (0,)


def test_every_bad_row_is_reported_at_once(db: Conn) -> None:
    manifest = _manifest()
    manifest["sensors"][0]["kind"] = "toaster"
    manifest["sensors"][1]["lanes"] = 0
    with pytest.raises(ManifestError) as info:
        load(db, manifest)
    assert {(e.section, e.index) for e in info.value.errors} == {("sensors", 0), ("sensors", 1)}


def test_the_command_loads_a_file_and_reports_bad_rows(database_url: str, tmp_path: Path) -> None:
    good = tmp_path / "city.json"
    good.write_text(json.dumps(_manifest()))
    env = {"URBANPULSE_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "services.cli", "registry", "load"]
    ok = subprocess.run(
        [*command, str(good)], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "registered 1 districts, 1 gateways, 2 sensors" in ok.stdout
    bad = _manifest()
    bad["sensors"][1]["kind"] = "toaster"
    refused = subprocess.run(
        [*command, "-"],
        input=json.dumps(bad),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert refused.returncode == 2
    assert "sensors[1].kind" in refused.stderr
    assert "nothing was loaded" in refused.stderr


@pytest.mark.parametrize(
    "installed_at",
    [
        pytest.param("0001-01-01T00:00:00+01:00", id="utc-year-0"),
        pytest.param("9999-12-31T23:00:00-05:00", id="utc-year-10000"),
    ],
)
def test_the_command_refuses_an_installed_at_readers_cannot_read(
    database_url: str, db: Conn, installed_at: str
) -> None:
    """Issue 11: bulk loads stored these, and every read of the registry failed afterwards."""
    manifest = _manifest()
    manifest["sensors"][0]["installed_at"] = installed_at
    refused = subprocess.run(
        [sys.executable, "-m", "services.cli", "registry", "load", "-"],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        env={"URBANPULSE_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        check=False,
    )
    assert refused.returncode == 2, refused.stdout
    assert "sensors[0].installed_at: Value error, must be from 1900-01-01" in refused.stderr
    assert db.execute("SELECT count(*) FROM sensors").fetchone() == (0,)


def _traffic_manifest(**segment: Any) -> dict[str, Any]:
    manifest = _manifest()
    manifest["sensors"].append(
        {"id": "tra-d01-01", "kind": "traffic_counter", "district_id": "d01", **segment}
    )
    return manifest


@pytest.mark.parametrize(
    ("given", "stored_m_s"),
    [
        pytest.param(13.9, 13.9, id="bare-number-is-m/s"),
        pytest.param("50 km/h", 50 / 3.6, id="string-with-unit"),
        pytest.param({"value": 50, "unit": "km/h"}, 50 / 3.6, id="object-with-unit"),
        pytest.param("13.9", 13.9, id="csv-cell-without-unit"),
    ],
)
def test_registry_quantities_take_a_unit_and_are_stored_canonical(
    db: Conn, given: Any, stored_m_s: float
) -> None:
    load(db, _traffic_manifest(free_flow_speed=given, segment_length_m="1.2 km"))
    row = db.execute(
        "SELECT free_flow_speed, segment_length_m FROM sensors WHERE id = 'tra-d01-01'"
    ).fetchone()
    assert row is not None
    assert row[0] == pytest.approx(stored_m_s)
    assert row[1] == pytest.approx(1200.0)


@pytest.mark.parametrize(
    ("segment", "field", "reason"),
    [
        # 50 meant as km/h but read as m/s is 180 km/h: refused, and the refusal says the unit.
        pytest.param({"free_flow_speed": 50}, "free_flow_speed", "50 m/s is implausible", id="50"),
        pytest.param({"free_flow_speed": "50 mph"}, "free_flow_speed", "'mph'", id="bad-unit"),
        pytest.param({"free_flow_speed": "fast"}, "free_flow_speed", "not a number", id="text"),
        pytest.param(
            {"free_flow_speed": "300 km/h"}, "free_flow_speed", "5 to 150 km/h", id="300-km/h"
        ),
        pytest.param({"segment_length_m": "80 km"}, "segment_length_m", "1 m to 50 km", id="long"),
        pytest.param({"interval_s": 0}, "interval_s", "1 s to 1 day", id="interval"),
        pytest.param({"rated_max": 5}, "rated_max", "has no rating", id="unrated-kind"),
    ],
)
def test_an_implausible_quantity_is_refused_with_its_field_and_reason(
    db: Conn, segment: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ManifestError) as info:
        load(db, _traffic_manifest(**segment))
    (error,) = info.value.errors
    assert (error.section, error.index, error.field) == ("sensors", 2, field)
    assert reason in error.message
    db.rollback()
    assert db.execute("SELECT count(*) FROM sensors").fetchone() == (0,)


def test_a_rating_takes_the_unit_of_the_kinds_rated_quantity(db: Conn) -> None:
    manifest = _manifest()
    manifest["sensors"][0]["rated_max"] = "2 MW"
    with pytest.raises(ManifestError) as info:
        load(db, manifest)
    assert "one of W, kW" in info.value.errors[0].message
    db.rollback()
    manifest["sensors"][0]["rated_max"] = "2000 kW"
    manifest["sensors"][1]["rated_max"] = {"value": 300, "unit": "l/s"}
    load(db, manifest)
    rows = _pairs(db.execute("SELECT id, rated_max FROM sensors").fetchall())
    assert rows == {"ene-fdr-d01-01": 2e6, "wat-dma-d01-01": pytest.approx(0.3)}


def test_a_water_meter_has_no_rating() -> None:
    # Ingestion bounds only a kind's rated quantity (a rate); a meter index has no rate to bound.
    with pytest.raises(ManifestError) as info:
        parse({"sensors": [{"id": "wm-1", "kind": "water_meter", "rated_max": "5 m3/h"}]})
    (error,) = info.value.errors
    assert error.field == "rated_max"
    assert "a water_meter sensor has no rating" in error.message


def test_smart_is_a_registry_attribute_of_meters_defaulting_by_kind(db: Conn) -> None:
    manifest = _manifest()
    manifest["sensors"] += [
        {"id": "em-1", "kind": "electricity_meter", "district_id": "d01"},
        {"id": "em-2", "kind": "electricity_meter", "district_id": "d01", "smart": False},
    ]
    load(db, manifest)
    stored = {
        key: (kind, smart) for key, kind, smart in db.execute("SELECT id, kind, smart FROM sensors")
    }
    # Stored null unless given: null is the kind's default (migration 0003), resolved on read.
    assert stored["em-1"] == ("electricity_meter", None)
    rows = {
        key: KINDS[kind].smart if smart is None else smart for key, (kind, smart) in stored.items()
    }
    # The kind catalog's default: electricity meters are smart; a feeder is no meter (null).
    assert rows == {"em-1": True, "em-2": False, "ene-fdr-d01-01": None, "wat-dma-d01-01": None}
    manifest["sensors"][0]["smart"] = True
    with pytest.raises(ManifestError) as info:
        load(db, manifest)
    assert str(info.value.errors[0]).startswith("sensors[0].smart: ")
    assert "only meters" in info.value.errors[0].message
