"""The registry's tables: the one place that writes districts, gateways and sensors."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from services.storage import registry

Conn = psycopg.Connection[tuple[object, ...]]


def _city(db: Conn) -> None:
    registry.load(
        db,
        {
            "districts": [{"id": "d1", "name": "One"}],
            "gateways": [{"id": "gw1", "district_id": "d1"}],
            "sensors": [{"id": "s1", "kind": "noise", "gateway_id": "gw1", "district_id": "d1"}],
        },
    )


@pytest.mark.parametrize(
    ("write", "refused"),
    [
        # A column the registry maintains, and a model's field that is no column.
        pytest.param(
            lambda db: registry.sensors.update(db, "s1", {"retired_at": None}),
            "retired_at",
            id="maintained",
        ),
        pytest.param(
            lambda db: registry.gateways.update(db, "gw1", {"online": True}),
            "online",
            id="status",
        ),
        pytest.param(
            lambda db: registry.sensors.insert(db, {"id": "s2", "kind": "noise", "last": []}),
            "last",
            id="no-column",
        ),
        pytest.param(
            lambda db: registry.districts.find(db, equal={"nme": "One"}),
            "nme",
            id="filter",
        ),
    ],
)
def test_a_name_that_is_no_writable_column_is_refused_before_any_sql(
    db: Conn, write: Any, refused: str
) -> None:
    _city(db)
    with pytest.raises(ValueError, match=refused):
        write(db)
    assert db.execute(
        "SELECT count(*), bool_or(retired_at IS NOT NULL) FROM sensors"
    ).fetchone() == (
        1,
        False,
    )


def test_insert_answers_false_for_a_taken_id_and_changes_nothing(db: Conn) -> None:
    _city(db)
    assert registry.districts.insert(db, {"id": "d2", "name": "Two", "reference": {"a": 1}})
    assert not registry.districts.insert(db, {"id": "d2", "name": "Other"})
    assert registry.districts.get(db, "d2", ["name", "reference"]) == {
        "name": "Two",
        "reference": {"a": 1},
    }
    assert registry.districts.get(db, "nowhere") is None


def test_unknown_references_names_each_row_and_column(db: Conn) -> None:
    _city(db)
    rows: list[dict[str, str | None]] = [
        {"district_id": "d1", "gateway_id": "gw1"},
        {"district_id": "d9", "gateway_id": "gw9"},
        {"district_id": "d-new", "gateway_id": None},
    ]
    assert registry.unknown_references(db, rows, {"district_id": {"d-new"}}) == [
        (1, "district_id", "unknown district 'd9'"),
        (1, "gateway_id", "unknown gateway 'gw9'"),
    ]
    assert registry.unknown_references(db, rows[:1]) == []


def test_retiring_a_gateway_waits_for_its_sensors(db: Conn) -> None:
    _city(db)
    assert registry.retire_gateway(db, "gw1") == 1
    registry.retire_sensor(db, "s1")
    first = db.execute("SELECT retired_at FROM sensors WHERE id = 's1'").fetchone()
    registry.retire_sensor(db, "s1")
    assert db.execute("SELECT retired_at FROM sensors WHERE id = 's1'").fetchone() == first
    assert registry.retire_gateway(db, "gw1") == 0
    assert registry.gateways.get(db, "gw1", ["status"]) == {"status": "retired"}


def test_what_the_ingestion_worker_writes(db: Conn) -> None:
    _city(db)
    registry.add_pending_sensors(db, [("new-1", "gw1"), ("new-2", "gw-unknown"), ("s1", "gw1")])
    rows = db.execute(
        "SELECT id, kind, domain, gateway_id, status FROM sensors ORDER BY id"
    ).fetchall()
    assert rows == [
        ("new-1", "unknown", "unknown", "gw1", "pending"),
        # An unknown gateway is left out rather than failing the batch.
        ("new-2", "unknown", "unknown", None, "pending"),
        ("s1", "noise", "environment", "gw1", "active"),
    ]
    registry.record_gateway_status(db, [("gw1", False, False)])
    assert registry.gateways.get(db, "gw1", ["online", "last_seen"]) == {
        "online": False,
        "last_seen": None,
    }
    registry.record_gateway_status(db, [("gw1", True, True), ("gw-unknown", True, True)])
    seen = registry.gateways.get(db, "gw1", ["online", "last_seen"])
    assert seen is not None
    assert seen["online"] is True
    assert seen["last_seen"] is not None
    # The broker's retained copy changes the state, not the time last seen.
    registry.record_gateway_status(db, [("gw1", False, False)])
    assert registry.gateways.get(db, "gw1", ["online", "last_seen"]) == {
        "online": False,
        "last_seen": seen["last_seen"],
    }
