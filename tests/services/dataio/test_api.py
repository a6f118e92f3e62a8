"""The import and export endpoints through real HTTP (Starlette's test client on the app, and
uvicorn for a client that goes away), against the real database, in both storage modes."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx2 as httpx
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.settings import Settings
from tests.services.api.routes.test_stream import serve

from .conftest import DAY0, HOURS, SENSORS, Conn

PERIOD = {"start": DAY0.isoformat(), "end": (DAY0 + timedelta(hours=HOURS)).isoformat()}


def _auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _csv_body(*rows: str) -> bytes:
    return ("sensor,quantity,time,value,unit\n" + "\n".join(rows) + "\n").encode()


def test_an_engineer_imports_a_csv_once(
    history: Conn, api_client: TestClient, api_keys: dict[str, str]
) -> None:
    moment = (DAY0 + timedelta(days=5)).isoformat()
    body = _csv_body(f"fdr-c1,voltage,{moment},231,V", f"ghost,voltage,{moment},1,V")
    headers = {**_auth(api_keys["engineer"]), "Content-Type": "text/csv"}
    response = api_client.post("/v1/imports?source=field.csv", content=body, headers=headers)
    assert response.status_code == 200, response.text
    counts = response.json()
    assert (counts["stored"], counts["quarantined"], counts["already_done"]) == (1, 1, False)
    again = api_client.post("/v1/imports?source=field.csv", content=body, headers=headers)
    assert again.json()["already_done"] is True
    assert again.json()["stored"] == 0
    row = history.execute("SELECT topic, reason FROM quarantine").fetchone()
    history.commit()
    assert row == ("import:field.csv:3", "unknown_sensor")


def test_import_refusals(api_client: TestClient, api_keys: dict[str, str]) -> None:
    body = _csv_body("fdr-c1,voltage,2026-01-01T00:00:00Z,231,V")
    operator = {**_auth(api_keys["operator"]), "Content-Type": "text/csv"}
    assert api_client.post("/v1/imports", content=body, headers=operator).status_code == 403
    engineer = _auth(api_keys["engineer"])
    wrong_type = api_client.post(
        "/v1/imports", content=body, headers={**engineer, "Content-Type": "application/pdf"}
    )
    assert wrong_type.status_code == 415
    assert wrong_type.headers["content-type"] == "application/problem+json"
    no_header = api_client.post(
        "/v1/imports", content=b"a,b\n1,2\n", headers={**engineer, "Content-Type": "text/csv"}
    )
    assert no_header.status_code == 422
    assert no_header.json()["errors"][0]["field"] == "body"
    # A bare carriage return inside the header line (found by schemathesis: it was a 500).
    torn_header = api_client.post(
        "/v1/imports",
        content=b"\x16\xc2\x9f\rk,b\n1,2\n",
        headers={**engineer, "Content-Type": "text/csv"},
    )
    assert torn_header.status_code == 422, torn_header.text
    assert "header" in torn_header.json()["errors"][0]["message"]
    bad_map = api_client.post(
        "/v1/imports?map=colour%3Dred",
        content=body,
        headers={**engineer, "Content-Type": "text/csv"},
    )
    assert bad_map.status_code == 422
    assert bad_map.json()["errors"][0]["field"] == "query.map"
    for zone in ("Mars/Olympus", "../etc", ""):
        bad_zone = api_client.post(
            "/v1/imports",
            params={"timezone": zone},
            content=body,
            headers={**engineer, "Content-Type": "text/csv"},
        )
        assert bad_zone.status_code == 422, zone
        assert bad_zone.json()["errors"][0]["field"] == "query.timezone"


def test_an_import_body_over_the_limit_is_413(
    api_settings: Settings, api_keys: dict[str, str]
) -> None:
    app: FastAPI = create_app(api_settings.model_copy(update={"import_max_body_bytes": 1024}))
    with TestClient(app) as client:
        response = client.post(
            "/v1/imports",
            content=b"x" * 2048,
            headers={**_auth(api_keys["engineer"]), "Content-Type": "text/csv"},
        )
    assert response.status_code == 413
    assert "URBANPULSE_IMPORT_MAX_BODY_BYTES" in response.json()["detail"]


def test_readings_export_follows_the_open_data_level(
    history: Conn, api_client: TestClient, api_keys: dict[str, str]
) -> None:
    headers = _auth(api_keys["service"])
    # Default URBANPULSE_OPEN_DATA_SENSOR_LEVEL=district: per district, no sensor ids.
    response = api_client.get(
        "/v1/exports/readings", params={**PERIOD, "rollup": "1d"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 6
    assert "sensor" not in rows[0]
    refused = api_client.get(
        "/v1/exports/readings", params={**PERIOD, "level": "sensor"}, headers=headers
    )
    assert refused.status_code == 403
    assert "URBANPULSE_OPEN_DATA_SENSOR_LEVEL" in refused.json()["detail"]
    bad = api_client.get(
        "/v1/exports/readings",
        params={"start": PERIOD["end"], "end": PERIOD["start"]},
        headers=headers,
    )
    assert bad.status_code == 422


def test_sensor_level_parquet_when_the_setting_allows(
    history: Conn, api_settings: Settings, api_keys: dict[str, str]
) -> None:
    app = create_app(api_settings.model_copy(update={"open_data_sensor_level": "sensor"}))
    with TestClient(app) as client:
        response = client.get(
            "/v1/exports/readings",
            params={**PERIOD, "level": "sensor", "format": "parquet"},
            headers=_auth(api_keys["operator"]),
        )
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == HOURS * len(SENSORS)
    assert set(table.column("sensor").to_pylist()) == set(SENSORS)


def test_kpi_export_and_catalog(
    history: Conn, api_client: TestClient, api_keys: dict[str, str]
) -> None:
    headers = _auth(api_keys["service"])
    params = {**PERIOD, "district": "north", "domain": "energy", "format": "json"}
    response = api_client.get(
        "/v1/exports/kpis", params={**params, "grain": "day"}, headers=headers
    )
    assert response.status_code == 200, response.text
    items = response.json()
    assert items
    assert {i["scope"] for i in items} == {"north"}
    assert {"rating", "coverage_ratio", "baseline_value"} <= set(items[0])
    catalog = api_client.get("/v1/exports/catalog", params=params, headers=headers)
    assert catalog.status_code == 200
    assert catalog.headers["content-type"].startswith("application/ld+json")
    body = json.loads(catalog.text)
    assert body["dct:spatial"]["locn:geographicName"] == "North"
    urls = [d["dcat:accessURL"]["@id"] for d in body["dcat:distribution"]]
    assert len(urls) == 2
    for url in urls:
        assert url.startswith("http://testserver/v1/exports/")
        fetched = api_client.get(url, headers=headers)
        assert fetched.status_code == 200


@pytest.mark.parametrize(
    "path", ["/v1/exports/readings", "/v1/exports/kpis", "/v1/exports/catalog"]
)
def test_exports_need_a_key(api_client: TestClient, path: str) -> None:
    assert api_client.get(path, params=PERIOD).status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "setting"),
    [
        # Found by schemathesis: a KPI export from 2000 to 5188 ran past the client's timeout.
        ("/v1/exports/kpis", {"start": "2000-01-01T00:00:00Z", "end": "5188-01-01T00:00:00Z"},
         "URBANPULSE_API_KPI_MAX_SPAN"),
        ("/v1/exports/kpis", {**PERIOD, "grain": "hour", "end": "2030-01-01T00:00:00Z"},
         "URBANPULSE_API_KPI_MAX_BUCKETS"),
        ("/v1/exports/readings",
         {"start": "2000-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z", "rollup": "raw"},
         "URBANPULSE_API_MAX_SPAN_RAW"),
    ],
)  # fmt: skip
def test_an_export_past_the_api_limits_is_refused_naming_the_setting(
    api_client: TestClient, api_keys: dict[str, str], path: str, params: dict[str, str],
    setting: str,
) -> None:  # fmt: skip
    response = api_client.get(path, params=params, headers=_auth(api_keys["service"]))
    assert response.status_code == 422, response.text
    assert setting in response.text


@pytest.fixture
def served(api_settings: Settings) -> Iterator[str]:
    """The app with sensor-level open data, served by uvicorn: its base URL."""
    with serve(api_settings.model_copy(update={"open_data_sensor_level": "sensor"})) as url:
        yield url


def _exports_running(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT state, left(query, 60) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state <> 'idle' "
        "AND (query LIKE 'COPY (SELECT %%' OR query LIKE '%%urbanpulse_export%%')"
    ).fetchall()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_client_gone_midway_stops_the_export_query(
    history: Conn, served: str, api_keys: dict[str, str], fmt: str
) -> None:
    # A reading a second for a day per sensor: far more than the sockets' buffers hold.
    history.execute(
        "INSERT INTO readings (time, sensor_key, quantity_key, value) "
        "SELECT t, s.key, q.key, 1.5 FROM sensors s, quantities q, "
        "generate_series(%s::timestamptz, %s::timestamptz, interval '1 second') t "
        "WHERE q.name = 'voltage' ON CONFLICT DO NOTHING",
        (DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)),
    )
    history.commit()
    day = {"start": DAY0.isoformat(), "end": (DAY0 + timedelta(days=3)).isoformat()}
    params = {**day, "rollup": "raw", "level": "sensor", "format": fmt}
    with (
        httpx.Client(base_url=served, timeout=30) as client,
        client.stream(
            "GET", "/v1/exports/readings", params=params, headers=_auth(api_keys["service"])
        ) as response,
    ):
        assert response.status_code == 200
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > 256 * 1024:
                break
        assert _exports_running(history), "the export ended before the client went away"
        history.commit()
    deadline = time.monotonic() + 10
    while running := _exports_running(history):
        history.commit()
        assert time.monotonic() < deadline, f"the export goes on without its client: {running}"
        time.sleep(0.1)
