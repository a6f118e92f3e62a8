"""The built-in pages over HTTP: the console's files and their security headers, the session
endpoint, and the public page's exposure (off by default; on, what it shows and what it
refuses). The pages' scripts run in a real browser in tests/browser/."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.routes.pages import CSP
from services.kpi import engine
from services.settings import Settings
from services.storage.modes import storage_mode
from services.storage.writer import ReadingWriter
from tests.services.kpi.conftest import City

PAGE_FILES = ("console.html", "console.js", "common.js", "pages.css", "public.js", "public.html")


def _secure(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-security-policy"] == CSP
    # No inline script or style may run, and no other site may frame the page (clickjacking of
    # the acknowledge button).
    assert "'unsafe-inline'" not in CSP
    assert "script-src 'self'" in CSP
    assert "frame-ancestors 'none'" in CSP
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_the_console_is_served_without_a_key_with_its_security_headers(
    api_client: TestClient,
) -> None:
    response = api_client.get("/console")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    _secure(response)
    page = response.text
    # Scripts are files (the CSP forbids inline ones): nothing between <script> tags.
    assert "<script>" not in page
    assert '<script src="/console/static/console.js" defer></script>' in page
    assert " style=" not in page


@pytest.mark.parametrize("name", PAGE_FILES)
def test_every_page_file_is_served_with_its_type_and_headers(
    api_client: TestClient, name: str
) -> None:
    response = api_client.get(f"/console/static/{name}")
    assert response.status_code == 200
    expected = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
    assert response.headers["content-type"].startswith(expected[name.rsplit(".", 1)[1]])
    _secure(response)


@pytest.mark.parametrize(
    "name", ["__init__.py", "..%2Fapp.py", "nothing.js", "..%2F..%2Fsettings.py", "%2Fetc%2Fpasswd"]
)
def test_only_the_page_files_are_served(api_client: TestClient, name: str) -> None:
    response = api_client.get(f"/console/static/{name}")
    assert response.status_code == 404
    assert "import" not in response.text


def test_the_console_script_uses_the_api_with_a_header_key_kept_per_session(
    api_client: TestClient,
) -> None:
    script = api_client.get("/console/static/console.js").text
    for path in ("/v1/kpis/current?period=day", "/v1/alerts?state=open", "/v1/stream"):
        assert path in script
    assert '"X-API-Key"' in script
    assert '"Last-Event-ID"' in script
    # The key is kept for the tab only, and "forget key" removes it (and the old page's copy).
    assert "sessionStorage.setItem(KEY_ITEM" in script
    assert "localStorage.setItem" not in script
    assert "sessionStorage.removeItem(KEY_ITEM)" in script


def test_old_addresses_lead_to_the_console(api_client: TestClient) -> None:
    for path in ("/", "/live"):
        response = api_client.get(path, follow_redirects=False)
        assert response.status_code == 307
        assert response.headers["location"] == "/console"


def test_the_pages_are_not_part_of_the_api_schema(api_client: TestClient) -> None:
    paths = api_client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/console", "/public", "/live")) or p == "/"]


def test_the_session_says_who_the_key_is_and_what_it_may_do(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    assert api_client.get("/console/session").status_code == 401
    bad = api_client.get("/console/session", headers={"X-API-Key": "up000000000000.nope"})
    assert bad.status_code == 401
    operator = api_client.get("/console/session", headers={"X-API-Key": api_keys["operator"]})
    assert operator.json()["role"] == "operator"
    assert "alerts:write" in operator.json()["permissions"]
    service = api_client.get("/console/session", headers={"X-API-Key": api_keys["service"]})
    assert "alerts:write" not in service.json()["permissions"]


# --- the public page --------------------------------------------------------------------------


def test_the_public_page_is_off_by_default(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    assert Settings(_env_file=None).public_page is False  # type: ignore[call-arg]
    for path in ("/public", "/public/kpis", "/public/kpis?period=day"):
        response = api_client.get(path)
        assert response.status_code == 404, path
        # Not even with a key: the city has not published anything.
        assert api_client.get(path, headers={"X-API-Key": api_keys["admin"]}).status_code == 404


@pytest.fixture
def rated_city(db: psycopg.Connection[tuple[object, ...]]) -> City:
    """d01: an air station reporting every minute since the city's midnight; d02: one that
    said nothing (too thin to rate); the monitor's values stored."""
    mode = storage_mode(db)
    city = City(conn=db, mode=mode, writer=ReadingWriter(db, mode))
    city.district("d01", name="North")
    city.district("d02", name="South")
    station = city.sensor(
        "air-d01-1", "air_quality", "d01", interval_s=60, latitude=50.812345, longitude=4.387654
    )
    city.sensor("air-d02-1", "air_quality", "d02", interval_s=60, latitude=50.7, longitude=4.4)
    now = datetime.now(UTC)
    today, _ = engine.period_bounds("day", now, engine.load_settings(city.conn).timezone)
    city.series(station, "pm25", today, now, step_s=60, value=12.5)
    engine.refresh_current(city.conn)
    city.conn.commit()
    return city


def _public_client(settings: Settings, **changes: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update={"public_page": True, **changes})))


def test_the_public_endpoint_shows_kpis_with_targets_coverage_and_trend(
    rated_city: City, api_settings: Settings
) -> None:
    with _public_client(api_settings) as client:
        response = client.get("/public/kpis", params={"period": "day"})
        assert response.status_code == 200, response.text
        body = response.json()
        page = client.get("/public")
    assert page.status_code == 200
    _secure(page)
    assert response.headers["cache-control"].startswith("public")
    assert [s["id"] for s in body["scopes"]] == ["city", "d01", "d02"]
    assert [s["name"] for s in body["scopes"]][1:] == ["North", "South"]
    d01 = {v["kpi_id"]: v for v in body["scopes"][1]["values"]}
    air = d01["AIR-1"]
    assert air["value"] == pytest.approx(12.5)
    assert air["rating"] in {"met", "warning", "missed"}
    assert air["unit"] == "ug/m3"
    assert {"target", "warning", "better", "coverage", "trend", "note"} <= air.keys()
    assert air["coverage"]["ratio"] > air["coverage"]["needed"] > 0
    assert air["note"] is None
    assert {k["id"] for k in body["kpis"]} >= {"AIR-1"}
    # d02's station said nothing: no value, and the page says why in plain words.
    d02 = {v["kpi_id"]: v for v in body["scopes"][2]["values"]}["AIR-1"]
    assert d02["rating"] == "insufficient_data"
    assert d02["value"] is None
    assert d02["note"].startswith("Not enough data to rate: 0 % of the expected data arrived")
    assert d02["trend"] is None


def test_the_public_endpoint_never_shows_readings_or_sensors(
    rated_city: City, api_settings: Settings
) -> None:
    with _public_client(api_settings) as client:
        body = client.get("/public/kpis", params={"period": "day"}).json()
        text = json.dumps(body)
        # No sensor id, position or per-sensor detail; no raw reading.
        for secret in (
            "air-d01-1",
            "air-d02-1",
            "50.812345",
            "4.387654",
            "latitude",
            "detail",
            "gw-d01",
        ):
            assert secret not in text, secret
        assert "sensors" not in body["scopes"][1]
        # A key changes nothing, and the API behind stays closed to the anonymous.
        with_key = client.get("/public/kpis", params={"period": "day"})
        assert with_key.json() == body
        for path in ("/v1/sensors", "/v1/sensors/air-d01-1/readings", "/v1/kpis/current"):
            assert client.get(path).status_code == 401, path
        for path in ("/public/sensors", "/public/readings", "/public/kpis/AIR-1"):
            assert client.get(path).status_code == 404, path
        # Only the periods it publishes, named in a 422; nothing but GET.
        refused = client.get("/public/kpis", params={"period": "hour"})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "query.period"
        assert client.post("/public/kpis").status_code == 405


def test_sensor_counts_only_when_the_setting_allows(
    rated_city: City, api_settings: Settings
) -> None:
    with _public_client(api_settings, public_sensor_counts=True) as client:
        body = client.get("/public/kpis", params={"period": "day"}).json()
    assert body["scopes"][1]["sensors"] == {"environment": 1}
    assert body["scopes"][2]["sensors"] == {"environment": 1}
    assert "air-d01-1" not in json.dumps(body)
