"""Who may call what: every role against every endpoint of ours, and keys that must be refused."""

from __future__ import annotations

import time

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.auth import Authenticator
from services.api.keys import create_key, revoke_key
from services.kpi.alerts.defaults import install_defaults
from services.storage.registry import load
from tests.services.api.conftest import auth

ROLES = ("operator", "engineer", "service", "admin")
READERS = set(ROLES)
REGISTRARS = {"engineer", "admin"}
ALERT_HANDLERS = {"operator", "engineer", "admin"}
DAY = "start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z"

# (method, path, json body or None, roles allowed). Write bodies are valid, so an allowed call
# gets a 2xx; 404s would hide refusals, so the fixture city below has every id named here.
ENDPOINTS = [
    ("GET", "/v1/districts", None, READERS),
    ("GET", "/v1/districts/d1", None, READERS),
    ("POST", "/v1/districts", {"id": "d9", "name": "Nine"}, REGISTRARS),
    ("PATCH", "/v1/districts/d1", {"population": 5}, REGISTRARS),
    ("GET", "/v1/gateways", None, READERS),
    ("GET", "/v1/gateways/gw1", None, READERS),
    ("POST", "/v1/gateways", {"id": "gw9", "district_id": "d1"}, REGISTRARS),
    ("PATCH", "/v1/gateways/gw1", {"description": "x"}, REGISTRARS),
    ("POST", "/v1/gateways/gw-empty/retire", None, REGISTRARS),
    ("DELETE", "/v1/gateways/gw-empty", None, REGISTRARS),
    ("GET", "/v1/sensors", None, READERS),
    ("GET", "/v1/sensors/s1", None, READERS),
    ("POST", "/v1/sensors", {"id": "s9", "kind": "noise"}, REGISTRARS),
    ("PATCH", "/v1/sensors/s1", {"latitude": 45.0}, REGISTRARS),
    ("POST", "/v1/sensors/s2/retire", None, REGISTRARS),
    ("DELETE", "/v1/sensors/s2", None, REGISTRARS),
    (
        "POST",
        "/v1/registry/bulk?dry_run=true",
        {"districts": [{"id": "d8", "name": "E"}]},
        REGISTRARS,
    ),
    ("GET", "/v1/sensors/s1/readings", None, READERS),
    ("GET", "/v1/quarantine", None, READERS - {"service"}),  # payloads: issue 11
    ("GET", "/v1/quarantine/summary", None, READERS),
    ("GET", "/v1/kpis", None, READERS),
    ("GET", "/v1/kpis/AIR-1", None, READERS),
    ("GET", "/v1/kpis/current", None, READERS),
    ("GET", f"/v1/kpis/AIR-1/values?{DAY}", None, READERS),
    ("GET", f"/v1/kpis/AIR-1/series?{DAY}&grain=hour", None, READERS),
    ("GET", "/v1/kpis/AIR-1/baseline", None, READERS),
    ("GET", "/v1/alerts", None, READERS),
    ("GET", "/v1/alerts/1", None, READERS),
    ("POST", "/v1/alerts/1/acknowledge", {"comment": "on it"}, ALERT_HANDLERS),
    ("POST", "/v1/alerts/1/clear", {"comment": "done"}, ALERT_HANDLERS),
    ("GET", "/v1/alert-rules", None, READERS),
    ("GET", "/v1/alert-rules/waste-fire", None, READERS),
]

CITY = {
    "districts": [{"id": "d1", "name": "One"}],
    "gateways": [{"id": "gw1", "district_id": "d1"}, {"id": "gw-empty", "district_id": "d1"}],
    "sensors": [
        {"id": "s1", "kind": "noise", "gateway_id": "gw1", "district_id": "d1"},
        {"id": "s2", "kind": "noise", "gateway_id": "gw1", "district_id": "d1"},
    ],
}


@pytest.fixture
def city(api_db: psycopg.Connection[tuple[object, ...]]) -> None:
    api_db.autocommit = False
    load(api_db, CITY)
    install_defaults(api_db)
    # Alert 1, open, for the acknowledge and clear calls above.
    api_db.execute(
        "INSERT INTO alerts (id, rule_id, subject_id, district_id, severity, message) "
        "VALUES (1, 'waste-fire', 's1', 'd1', 'critical', 'test')"
    )
    api_db.commit()
    api_db.autocommit = True


@pytest.mark.usefixtures("city")
@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_allowed_and_refused_as_its_permissions_say(
    api_client: TestClient, api_keys: dict[str, str], role: str
) -> None:
    outcomes = []
    for method, path, body, allowed in ENDPOINTS:
        response = api_client.request(method, path, json=body, headers=auth(api_keys[role]))
        outcomes.append((method, path, response.status_code))
        if role in allowed:
            assert 200 <= response.status_code < 300, (method, path, response.text)
        else:
            assert response.status_code == 403, (method, path, response.text)
            problem = response.json()
            assert response.headers["content-type"] == "application/problem+json"
            assert problem["status"] == 403
            assert problem["role"] == role
            assert problem["instance"] == path.split("?")[0]
    assert len(outcomes) == len(ENDPOINTS)


@pytest.mark.usefixtures("city")
@pytest.mark.parametrize(("method", "path", "body", "allowed"), ENDPOINTS)
def test_every_endpoint_needs_a_key(
    api_client: TestClient, method: str, path: str, body: object, allowed: set[str]
) -> None:
    response = api_client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "urn:urbanpulse:problem:unauthorized"


@pytest.mark.parametrize(
    "key",
    [
        "no-dot-at-all",
        "upffffffffffff.wrong-secret",  # unknown id
        ".secret-without-id",
        "id-without-secret.",
        "x" * 600,
    ],
)
def test_malformed_or_unknown_keys_are_401(api_client: TestClient, key: str) -> None:
    response = api_client.get("/v1/sensors", headers=auth(key))
    assert response.status_code == 401
    assert response.json()["detail"] == "the API key is unknown, malformed or revoked"


def test_a_known_id_with_the_wrong_secret_is_401(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    key_id = api_keys["admin"].split(".")[0]
    response = api_client.get("/v1/sensors", headers=auth(f"{key_id}.not-the-secret"))
    assert response.status_code == 401


def test_bearer_header_is_accepted(api_client: TestClient, api_keys: dict[str, str]) -> None:
    response = api_client.get(
        "/v1/sensors", headers={"Authorization": f"Bearer {api_keys['service']}"}
    )
    assert response.status_code == 200


def test_revoked_key_is_refused_once_the_cache_entry_expires(
    api_app: FastAPI, database_url: str, api_db: psycopg.Connection[tuple[object, ...]]
) -> None:
    # A short TTL so the test does not wait the production 5 s; the bound is the same code.
    api_app.state.authenticator = Authenticator(api_app.state.pool, ttl_s=0.3)
    with psycopg.connect(database_url) as conn:
        key_id, secret = create_key(conn, "leaver", "operator")
    with TestClient(api_app) as client:
        assert client.get("/v1/sensors", headers=auth(secret)).status_code == 200
        revoke_key(api_db, key_id)
        time.sleep(0.4)
        response = client.get("/v1/sensors", headers=auth(secret))
    assert response.status_code == 401


def test_last_used_is_recorded_once(
    api_client: TestClient, api_keys: dict[str, str], api_db: psycopg.Connection[tuple[object, ...]]
) -> None:
    key_id = api_keys["operator"].split(".")[0]
    api_client.get("/v1/sensors", headers=auth(api_keys["operator"]))
    first = api_db.execute("SELECT last_used_at FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert first is not None
    assert first[0] is not None
    api_client.get("/v1/sensors", headers=auth(api_keys["operator"]))
    second = api_db.execute("SELECT last_used_at FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert second == first  # within the minute: not written again
