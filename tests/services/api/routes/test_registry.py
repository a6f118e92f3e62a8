"""Registry routes: create, read, update, retire; filters; cursor walks; bulk registration."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.settings import Settings
from tests.services.api.conftest import auth

Db = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def engineer(api_client: TestClient, api_keys: dict[str, str]) -> TestClient:
    api_client.headers.update(auth(api_keys["engineer"]))
    return api_client


def _pairs(rows: list[tuple[object, ...]]) -> dict[object, object]:
    return {row[0]: row[1] for row in rows}


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    return body


def _fields(problem: dict[str, Any]) -> set[str]:
    return {e["field"] for e in problem["errors"]}


def _city(client: TestClient) -> None:
    assert client.post("/v1/districts", json={"id": "d1", "name": "One"}).status_code == 201
    assert client.post("/v1/gateways", json={"id": "gw1", "district_id": "d1"}).status_code == 201


def test_sensor_lifecycle(engineer: TestClient, api_db: Db) -> None:
    _city(engineer)
    created = engineer.post(
        "/v1/sensors",
        json={"id": "wm-1", "kind": "water_meter", "gateway_id": "gw1", "district_id": "d1"},
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/sensors/wm-1"
    body = created.json()
    assert (body["domain"], body["interval_s"], body["status"]) == ("water", 900.0, "active")
    assert body["last"] == [{"quantity": "index", "unit": "m3", "value": None, "time": None}]

    patched = engineer.patch("/v1/sensors/wm-1", json={"status": "maintenance", "dma": "A"})
    assert patched.status_code == 200
    assert (patched.json()["status"], patched.json()["dma"]) == ("maintenance", "A")

    retired = engineer.delete("/v1/sensors/wm-1")
    assert retired.status_code == 200
    assert retired.json()["status"] == "retired"
    assert retired.json()["retired_at"] is not None
    # Never a hard delete: the row is still there, and retiring again keeps the first time.
    again = engineer.post("/v1/sensors/wm-1/retire")
    assert again.json()["retired_at"] == retired.json()["retired_at"]
    assert api_db.execute("SELECT status FROM sensors WHERE id = 'wm-1'").fetchone() == ("retired",)
    _problem(engineer.patch("/v1/sensors/wm-1", json={"dma": "B"}), 409)


def test_create_conflicts_and_bad_references(engineer: TestClient) -> None:
    _city(engineer)
    _problem(engineer.post("/v1/districts", json={"id": "d1", "name": "Again"}), 409)
    bad = _problem(
        engineer.post(
            "/v1/sensors",
            json={"id": "s1", "kind": "noise", "gateway_id": "nope", "district_id": "nada"},
        ),
        422,
    )
    assert _fields(bad) == {"body.gateway_id", "body.district_id"}
    wrong_domain = _problem(
        engineer.post("/v1/sensors", json={"id": "s1", "kind": "noise", "domain": "water"}), 422
    )
    assert _fields(wrong_domain) == {"body.domain"}
    unknown_kind = _problem(engineer.post("/v1/sensors", json={"id": "s1", "kind": "toaster"}), 422)
    assert _fields(unknown_kind) == {"body.kind"}
    bad_id = _problem(engineer.post("/v1/sensors", json={"id": "a/b", "kind": "noise"}), 422)
    assert _fields(bad_id) == {"body.id"}
    extra = _problem(engineer.patch("/v1/sensors/x", json={"colour": "red"}), 422)
    assert _fields(extra) == {"body.colour"}


def test_unknown_ids_are_404(engineer: TestClient) -> None:
    for path in ("/v1/sensors/none", "/v1/gateways/none", "/v1/districts/none"):
        problem = _problem(engineer.get(path), 404)
        assert "none" in problem["detail"]
    _problem(engineer.patch("/v1/sensors/none", json={"dma": "x"}), 404)
    _problem(engineer.post("/v1/sensors/none/retire"), 404)
    _problem(engineer.delete("/v1/gateways/none"), 404)


def test_gateway_with_active_sensors_is_not_retired(engineer: TestClient) -> None:
    _city(engineer)
    engineer.post("/v1/sensors", json={"id": "s1", "kind": "noise", "gateway_id": "gw1"})
    problem = _problem(engineer.post("/v1/gateways/gw1/retire"), 409)
    assert problem["sensors"] == 1
    engineer.post("/v1/sensors/s1/retire")
    assert engineer.delete("/v1/gateways/gw1").json()["status"] == "retired"


def test_filters(engineer: TestClient) -> None:
    _city(engineer)
    engineer.post("/v1/districts", json={"id": "d2", "name": "Two"})
    for sensor in (
        {"id": "noise-1", "kind": "noise", "district_id": "d1", "gateway_id": "gw1"},
        {"id": "noise-2", "kind": "noise", "district_id": "d2"},
        {"id": "wm-1", "kind": "water_meter", "district_id": "d1"},
        {"id": "wm-2", "kind": "water_meter", "district_id": "d2", "status": "pending"},
    ):
        assert engineer.post("/v1/sensors", json=sensor).status_code == 201

    def ids(query: str) -> list[str]:
        response = engineer.get(f"/v1/sensors?{query}")
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["items"]]

    assert ids("district=d1") == ["noise-1", "wm-1"]
    assert ids("kind=water_meter") == ["wm-1", "wm-2"]
    assert ids("domain=environment") == ["noise-1", "noise-2"]
    assert ids("status=pending") == ["wm-2"]
    assert ids("gateway=gw1") == ["noise-1"]
    assert ids("q=WM") == ["wm-1", "wm-2"]
    assert ids("q=%25") == []  # a LIKE wildcard is matched literally
    assert ids("district=d2&kind=noise") == ["noise-2"]
    names = engineer.get("/v1/districts?q=two").json()["items"]
    assert [d["id"] for d in names] == ["d2"]


@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_cursor_walk_returns_every_row_once(engineer: TestClient, api_db: Db, limit: int) -> None:
    api_db.execute(
        "INSERT INTO sensors (id, kind, domain) "
        "SELECT 'n-' || lpad(i::text, 3, '0'), 'noise', 'environment' FROM generate_series(1, 23) i"
    )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = engineer.get("/v1/sensors", params=params).json()
        seen.extend(s["id"] for s in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"n-{i:03d}" for i in range(1, 24)]
    assert pages == -(-23 // limit)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=1001", "query.limit"),
        ("limit=ten", "query.limit"),
        ("cursor=not-a-cursor", "query.cursor"),
        ("cursor=eyJhIjoxfQ", "query.cursor"),  # valid base64 JSON, not ours
    ],
)
def test_bad_list_parameters_name_the_field(engineer: TestClient, query: str, field: str) -> None:
    problem = _problem(engineer.get(f"/v1/sensors?{query}"), 422)
    assert _fields(problem) == {field}
    assert field in problem["detail"]


MANIFEST = {
    "districts": [{"id": "d1", "name": "One"}],
    "gateways": [{"id": "gw1", "district_id": "d1"}],
    "sensors": [
        {"id": "wm-1", "kind": "water_meter", "gateway_id": "gw1", "district_id": "d1"},
        {"id": "aq-1", "kind": "air_quality", "district_id": "d1"},
    ],
}


def _count(db: Db, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def test_bulk_json_dry_run_then_load(engineer: TestClient, api_db: Db) -> None:
    dry = engineer.post("/v1/registry/bulk?dry_run=true", json=MANIFEST)
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"dry_run": True, "districts": 1, "gateways": 1, "sensors": 2}
    assert _count(api_db, "sensors") == 0
    loaded = engineer.post("/v1/registry/bulk", json=MANIFEST)
    assert loaded.json()["dry_run"] is False
    assert _count(api_db, "sensors") == 2
    # Idempotent: the same body again changes nothing.
    assert engineer.post("/v1/registry/bulk", json=MANIFEST).status_code == 200
    assert _count(api_db, "sensors") == 2


def test_bulk_bad_rows_are_all_reported_and_nothing_is_stored(
    engineer: TestClient, api_db: Db
) -> None:
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["sensors"] += [
        {"id": "x-1", "kind": "toaster"},
        {"id": "x-2", "kind": "noise", "gateway_id": "gw-missing"},
    ]
    manifest["gateways"].append({"id": "bad/id"})
    problem = _problem(engineer.post("/v1/registry/bulk", json=manifest), 422)
    assert _fields(problem) == {"sensors[2].kind", "gateways[1].id"}
    assert {(r["section"], r["index"]) for r in problem["rows"]} == {
        ("sensors", 2),
        ("gateways", 1),
    }
    assert _count(api_db, "districts") == 0
    # Once rows parse, references are checked against the manifest and the registry.
    manifest["sensors"].pop(2)
    manifest["gateways"].pop()
    problem = _problem(engineer.post("/v1/registry/bulk", json=manifest), 422)
    assert problem["errors"] == [
        {"field": "sensors[2].gateway_id", "message": "unknown gateway 'gw-missing'"}
    ]
    assert _count(api_db, "sensors") == 0


def test_bulk_csv(engineer: TestClient, api_db: Db) -> None:
    engineer.post("/v1/registry/bulk", json={"districts": MANIFEST["districts"]})
    csv_body = (
        "id,kind,district_id,latitude,longitude,metadata\n"
        'n-1,noise,d1,45.1,7.6,"{""mast"": 3}"\n'
        "n-2,noise,d1,,,\n"
    )
    response = engineer.post(
        "/v1/registry/bulk", content=csv_body, headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["sensors"] == 2
    row = api_db.execute("SELECT latitude, metadata FROM sensors WHERE id = 'n-1'").fetchone()
    assert row == (45.1, {"mast": 3})


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ("id,kind\nn-1,noise\nn-2,toaster\nn-3,noise,extra\n", {"sensors[2]"}),
        ("id,kind\nn-1,noise\nn-2,toaster\n", {"sensors[1].kind"}),
        ("id,kind,colour\nn-1,noise,red\n", {"sensors[0].colour"}),
        ("id,latitude\nn-1,north\n", {"sensors[0].kind", "sensors[0].latitude"}),
        ("", {"body"}),
        (b"id,kind\n\xff\xfe,noise\n", {"body"}),
    ],
    ids=["too-many-values", "unknown-kind", "unknown-column", "bad-values", "empty", "not-utf8"],
)
def test_bulk_bad_csv(
    engineer: TestClient, api_db: Db, body: str | bytes, fields: set[str]
) -> None:
    response = engineer.post(
        "/v1/registry/bulk", content=body, headers={"Content-Type": "text/csv"}
    )
    assert _fields(_problem(response, 422)) == fields
    assert _count(api_db, "sensors") == 0


def test_bulk_refuses_bad_json_other_media_and_huge_bodies(
    engineer: TestClient, api_settings: Settings
) -> None:
    problem = _problem(
        engineer.post(
            "/v1/registry/bulk", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        422,
    )
    assert _fields(problem) == {"body"}
    _problem(
        engineer.post("/v1/registry/bulk", content=b"x", headers={"Content-Type": "text/xml"}),
        415,
    )
    limit = api_settings.api_max_body_bytes_bulk
    huge = b"id,kind\n" + b"n,noise\n" * (limit // 8 + 1)
    too_large = _problem(
        engineer.post("/v1/registry/bulk", content=huge, headers={"Content-Type": "text/csv"}),
        413,
    )
    # The refusal names the setting an operator raises, and the limit it set.
    assert too_large["setting"] == "URBANPULSE_API_MAX_BODY_BYTES_BULK"
    assert too_large["max_bytes"] == limit
    assert "URBANPULSE_API_MAX_BODY_BYTES_BULK" in too_large["detail"]


def test_sensor_quantities_take_a_unit_and_implausible_ones_are_refused(
    engineer: TestClient, api_db: Db
) -> None:
    _city(engineer)
    counter = {"id": "tc-1", "kind": "traffic_counter", "district_id": "d1"}
    # 50 meant as km/h, read as m/s (180 km/h): refused, naming the field and the range.
    refused = _problem(engineer.post("/v1/sensors", json={**counter, "free_flow_speed": 50}), 422)
    assert _fields(refused) == {"body.free_flow_speed"}
    assert "implausible" in refused["errors"][0]["message"]
    assert "5 to 150 km/h" in refused["errors"][0]["message"]
    assert _count(api_db, "sensors") == 0

    created = engineer.post(
        "/v1/sensors",
        json={
            **counter,
            "free_flow_speed": "50 km/h",
            "segment_length_m": {"value": 0.8, "unit": "km"},
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["free_flow_speed"] == pytest.approx(50 / 3.6)
    assert created.json()["segment_length_m"] == pytest.approx(800.0)
    assert created.json()["smart"] is None  # not a meter

    patched = engineer.patch(
        "/v1/sensors/tc-1", json={"free_flow_speed": {"value": 30, "unit": "km/h"}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["free_flow_speed"] == pytest.approx(30 / 3.6)
    bad = _problem(
        engineer.patch("/v1/sensors/tc-1", json={"free_flow_speed": 50, "rated_max": "3 kW"}), 422
    )
    assert _fields(bad) == {"body.free_flow_speed", "body.rated_max"}
    row = api_db.execute("SELECT free_flow_speed FROM sensors WHERE id = 'tc-1'").fetchone()
    assert row is not None
    assert row[0] == pytest.approx(30 / 3.6)


def test_smart_is_set_read_and_changed_through_the_api(engineer: TestClient, api_db: Db) -> None:
    _city(engineer)
    meter = {"id": "em-1", "kind": "electricity_meter", "district_id": "d1"}
    created = engineer.post("/v1/sensors", json={**meter, "rated_max": "15 kW"})
    assert created.status_code == 201, created.text
    # The kind's default (catalog): an electricity meter is smart.
    assert (created.json()["smart"], created.json()["rated_max"]) == (True, 15000.0)
    patched = engineer.patch("/v1/sensors/em-1", json={"smart": False})
    assert patched.json()["smart"] is False
    assert engineer.get("/v1/sensors/em-1").json()["smart"] is False
    refused = _problem(
        engineer.post("/v1/sensors", json={"id": "n-1", "kind": "noise", "smart": True}), 422
    )
    assert _fields(refused) == {"body.smart"}
    assert _problem(engineer.patch("/v1/sensors/em-1", json={"rated_max": "60 kW"}), 422)


def test_a_kind_change_resets_smart_to_the_new_kinds_default(
    engineer: TestClient, api_db: Db
) -> None:
    _city(engineer)
    meter = {"id": "em-1", "kind": "electricity_meter", "district_id": "d1", "smart": False}
    assert engineer.post("/v1/sensors", json=meter).status_code == 201
    # Replaced by a noise meter: not a meter, so no flag, whatever the old device was.
    assert engineer.patch("/v1/sensors/em-1", json={"kind": "noise"}).json()["smart"] is None
    back = engineer.patch("/v1/sensors/em-1", json={"kind": "electricity_meter"})
    assert back.json()["smart"] is True
    stored = api_db.execute("SELECT smart FROM sensors WHERE id = 'em-1'").fetchone()
    assert stored == (None,)  # the kind's default, resolved on read
    given = engineer.patch("/v1/sensors/em-1", json={"kind": "water_meter", "smart": False})
    assert given.json()["smart"] is False


def test_bulk_csv_takes_units_and_smart(engineer: TestClient, api_db: Db) -> None:
    engineer.post("/v1/registry/bulk", json={"districts": MANIFEST["districts"]})
    csv_body = (
        "id,kind,district_id,free_flow_speed,smart\n"
        "tc-1,traffic_counter,d1,50 km/h,\n"
        "em-1,electricity_meter,d1,,false\n"
    )
    response = engineer.post(
        "/v1/registry/bulk", content=csv_body, headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    rows = _pairs(api_db.execute("SELECT id, coalesce(free_flow_speed, 0) FROM sensors").fetchall())
    assert rows["tc-1"] == pytest.approx(50 / 3.6)
    smart = api_db.execute("SELECT smart FROM sensors WHERE id = 'em-1'").fetchone()
    assert smart == (False,)
    refused = engineer.post(
        "/v1/registry/bulk",
        content="id,kind,free_flow_speed\ntc-2,traffic_counter,50\n",
        headers={"Content-Type": "text/csv"},
    )
    assert _fields(_problem(refused, 422)) == {"sensors[0].free_flow_speed"}


# Issue 11: instants whose UTC falls outside Python's years 1..9999 (bulk stored them, then every
# GET /v1/sensors was a 422), and instants no sensor was installed at.
BAD_INSTALLED_AT = [
    pytest.param("0001-01-01T00:00:00+01:00", id="utc-year-0"),
    pytest.param("9999-12-31T23:00:00-05:00", id="utc-year-10000"),
    pytest.param("0001-01-01T00:00:00Z", id="year-1"),
    pytest.param("1899-12-31T23:59:59Z", id="before-1900"),
    pytest.param("2200-01-01T00:00:00Z", id="from-2200"),
]


def _bulk_json(client: TestClient, installed_at: str) -> tuple[Any, str]:
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["sensors"][1]["installed_at"] = installed_at
    return client.post("/v1/registry/bulk", json=manifest), "sensors[1].installed_at"


def _bulk_csv(client: TestClient, installed_at: str) -> tuple[Any, str]:
    body = f"id,kind,installed_at\nn-1,noise,2024-03-01\nn-2,noise,{installed_at}\n"
    response = client.post("/v1/registry/bulk", content=body, headers={"Content-Type": "text/csv"})
    return response, "sensors[1].installed_at"


def _create(client: TestClient, installed_at: str) -> tuple[Any, str]:
    sensor = {"id": "n-1", "kind": "noise", "installed_at": installed_at}
    return client.post("/v1/sensors", json=sensor), "body.installed_at"


def _patch(client: TestClient, installed_at: str) -> tuple[Any, str]:
    sensor = {"id": "n-0", "kind": "noise", "installed_at": "2024-03-01T08:00:00+01:00"}
    assert client.post("/v1/sensors", json=sensor).status_code == 201
    return client.patch("/v1/sensors/n-0", json={"installed_at": installed_at}), "body.installed_at"


@pytest.mark.parametrize(
    "send",
    [_bulk_json, _bulk_csv, _create, _patch],
    ids=["bulk-json", "bulk-csv", "create", "patch"],
)
@pytest.mark.parametrize("installed_at", BAD_INSTALLED_AT)
def test_every_path_in_refuses_an_installed_at_out_of_range(
    engineer: TestClient, api_db: Db, send: Any, installed_at: str
) -> None:
    _city(engineer)
    response, field = send(engineer, installed_at)
    problem = _problem(response, 422)
    assert _fields(problem) == {field}
    assert "from 1900-01-01 to before 2200-01-01 in UTC" in problem["errors"][0]["message"]
    # Nothing stored, or left as it was: and every reader still reads the registry.
    rows = api_db.execute("SELECT id, installed_at FROM sensors").fetchall()
    assert rows in ([], [("n-0", datetime(2024, 3, 1, 7, tzinfo=UTC))])
    listed = engineer.get("/v1/sensors")
    assert listed.status_code == 200, listed.text


def test_installed_at_is_the_instant_given_and_a_time_without_offset_is_utc(
    engineer: TestClient,
) -> None:
    _city(engineer)
    body = {"id": "n-1", "kind": "noise", "installed_at": "1900-01-01T01:00:00+01:00"}
    created = engineer.post("/v1/sensors", json=body)
    assert created.status_code == 201, created.text
    assert _instant(created.json()["installed_at"]) == datetime(1900, 1, 1, tzinfo=UTC)
    patched = engineer.patch("/v1/sensors/n-1", json={"installed_at": "2199-12-31T23:59:59"})
    assert patched.status_code == 200, patched.text
    assert _instant(patched.json()["installed_at"]) == datetime(
        2199, 12, 31, 23, 59, 59, tzinfo=UTC
    )
    csv_body = "id,kind,installed_at\nn-2,noise,2024-03-01\n"
    loaded = engineer.post(
        "/v1/registry/bulk", content=csv_body, headers={"Content-Type": "text/csv"}
    )
    assert loaded.status_code == 200, loaded.text
    stored = engineer.get("/v1/sensors/n-2").json()["installed_at"]
    assert _instant(stored) == datetime(2024, 3, 1, tzinfo=UTC)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)
