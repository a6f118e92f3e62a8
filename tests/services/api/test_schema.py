"""Property-based tests of the whole API against its own OpenAPI schema (schemathesis).

Every operation in the schema — ours and the kpis, alerts and stream routers as they grow — is
called with generated parameters and bodies and an admin key, over real HTTP (uvicorn) with
schemathesis's own transport (requests); no answer may be a 5xx, and each must conform to the
schema (status documented, body matching its response model, ``Allow`` on a 405). The live
stream is excluded: its response never ends.

A larger run, against the API as `make up` serves it (issue 11 found 23 mismatches that way)::

    schemathesis run http://127.0.0.1:8000/openapi.json -H "X-API-Key: $KEY" \
        --exclude-path-regex /stream --checks all --max-examples 200
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.app import create_app
from services.api.keys import create_key
from services.settings import Settings
from services.storage.registry import load
from services.storage.urls import libpq_url
from tests.fixtures.broker import BrokerUnderTest

CITY = {
    "districts": [{"id": "d1", "name": "One"}],
    "gateways": [{"id": "gw1", "district_id": "d1"}],
    "sensors": [{"id": "s1", "kind": "noise", "gateway_id": "gw1", "district_id": "d1"}],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def schema_api(make_database: object, mqtt_broker: BrokerUnderTest) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of the API served by uvicorn on a real database and broker."""
    url = make_database("partitioned")  # type: ignore[operator]
    with psycopg.connect(libpq_url(url)) as conn:
        load(conn, CITY)
        _, admin = create_key(conn, "schemathesis", "admin")
    app = create_app(Settings(database_url=url, mqtt_url=mqtt_broker.url, _env_file=None))  # type: ignore[call-arg]
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", admin
    server.should_exit = True
    thread.join(10)


# The schema comes from an app that never connects (its pool opens only in a lifespan, which
# this one never runs); the generated calls go to the test's app on a real database. Both are
# built by the same code, so the schema is the same. (schemathesis.pytest.from_fixture would
# be the natural way, but schemathesis 4.32 sets a node attribute pytest 9 no longer has.)
_SCHEMA_ONLY = create_app(
    Settings(database_url="postgresql://unused@127.0.0.1:1/unused", _env_file=None)  # type: ignore[call-arg]
)
# from_dict, not from_asgi: a schema loaded from an ASGI app is called through that app, and
# these calls go over HTTP to the served one.
schema = schemathesis.openapi.from_dict(_SCHEMA_ONLY.openapi()).exclude(path_regex=r"/stream")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    allow_header_conformance,
]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    # One app and database for all examples, on purpose: the data only grows, as in use.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, schema_api: tuple[str, str]) -> None:
    # schemathesis's own requests transport: it failed every call while grafana-client's
    # urllib3-future shadowed urllib3 in the dev environment (issue 11; see pyproject.toml).
    base_url, admin = schema_api
    case.call_and_validate(base_url=base_url, headers={"X-API-Key": admin}, checks=CHECKS)


# What a schemathesis run against the served API found (issue 11), each pinned down here.


@pytest.fixture
def admin_client(
    api_client: TestClient, api_keys: dict[str, str], api_db: psycopg.Connection[tuple[object, ...]]
) -> TestClient:
    load(api_db, CITY)
    api_client.headers.update({"X-API-Key": api_keys["admin"]})
    return api_client


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/sensors/s1", "DELETE, GET, PATCH"),
        ("PUT", "/v1/districts", "GET, POST"),
        ("DELETE", "/v1/districts/d1", "GET, PATCH"),
        ("GET", "/v1/sensors/s1/retire", "POST"),
    ],
)
def test_a_405_allows_every_method_served_at_the_path(
    admin_client: TestClient, method: str, path: str, allow: str
) -> None:
    """Starlette named only the first route's method: GET /v1/sensors/{id} said ``Allow: GET``."""
    response = admin_client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.headers["content-type"] == "application/problem+json"


def test_delete_is_documented_as_the_retire_it_is(admin_client: TestClient) -> None:
    paths = admin_client.get("/openapi.json").json()["paths"]
    for path in ("/v1/sensors/{sensor_id}", "/v1/gateways/{gateway_id}"):
        operation = paths[path]["delete"]
        assert operation["summary"].startswith("Retire"), path
        assert "**not deleted**" in operation["description"], path
    assert admin_client.delete("/v1/sensors/s1").json()["status"] == "retired"
    after = admin_client.get("/v1/sensors/s1")
    assert (after.status_code, after.json()["status"]) == (200, "retired")


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/v1/quarantine/summary?since=0.5", None, "query.since"),
        ("GET", "/v1/quarantine?since=1700000000", None, "query.since"),
        ("GET", "/v1/alerts?since=0.5", None, "query.since"),
        ("PATCH", "/v1/districts/d1", {"households": False}, "body.households"),
        (
            "POST",
            "/v1/districts",
            {"id": "d2", "name": "Two", "population": "5"},
            "body.population",
        ),
        ("PATCH", "/v1/sensors/s1", {"latitude": "45.1"}, "body.latitude"),
        ("POST", "/v1/sensors", {"id": "s2", "kind": "noise", "lanes": True}, "body.lanes"),
    ],
)
def test_input_the_schema_refuses_is_refused(
    admin_client: TestClient, method: str, path: str, body: object, field: str
) -> None:
    """Lax parsing took a number for a date-time and `false` or "5" for a count."""
    response = admin_client.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_what_json_schema_calls_an_integer_is_taken(admin_client: TestClient) -> None:
    """JSON Schema's integer includes 8.0: refusing bools and text must not refuse that."""
    patched = admin_client.patch("/v1/sensors/s1", json={"latitude": 45, "customers_served": 8.0})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["latitude"], patched.json()["customers_served"]) == (45.0, 8)
    district = admin_client.patch("/v1/districts/d1", json={"population": 1200.0})
    assert (district.status_code, district.json()["population"]) == (200, 1200)


def test_the_schema_speaks_json_schema() -> None:
    """Bounds are `minimum`/`maximum`: a bound pydantic could not place came out as `ge`, which
    no client reads (and schemathesis then generated `lanes: 0` as valid)."""
    found: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            found.extend(f"{where}.{k}" for k in ("ge", "le", "gt", "lt") if k in node)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(_SCHEMA_ONLY.openapi()["components"]["schemas"], "schemas")
    assert found == []
