"""Property-based tests of the whole API against its own OpenAPI schema (schemathesis).

Every operation in the schema — ours and the kpis, alerts and stream routers as they grow — is
called with generated parameters and bodies and an admin key; no answer may be a 5xx, and each
must conform to the schema (status documented, body matching its response model). The live
stream is excluded: a test client cannot end an endless response.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
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


@pytest.fixture
def schema_app(
    make_database: object, mqtt_broker: BrokerUnderTest
) -> Iterator[tuple[FastAPI, str]]:
    url = make_database("partitioned")  # type: ignore[operator]
    with psycopg.connect(libpq_url(url)) as conn:
        load(conn, CITY)
        _, admin = create_key(conn, "schemathesis", "admin")
    app = create_app(Settings(database_url=url, mqtt_url=mqtt_broker.url, _env_file=None))  # type: ignore[call-arg]
    with TestClient(app):  # runs the lifespan: the pool the generated calls use is open
        yield app, admin


# The schema comes from an app that never connects (its pool opens only in a lifespan, which
# this one never runs); the generated calls go to the test's app on a real database. Both are
# built by the same code, so the schema is the same. (schemathesis.pytest.from_fixture would
# be the natural way, but schemathesis 4.32 sets a node attribute pytest 9 no longer has.)
_SCHEMA_ONLY = create_app(
    Settings(database_url="postgresql://unused@127.0.0.1:1/unused", _env_file=None)  # type: ignore[call-arg]
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _SCHEMA_ONLY).exclude(
    path_regex=r"/stream"
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
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
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, schema_app: tuple[FastAPI, str]
) -> None:
    app, admin = schema_app
    headers = {"X-API-Key": admin}
    # Sent through Starlette's TestClient: schemathesis 4.32's own ASGI transport trips over
    # the installed urllib3 (it counts pool connections through an attribute urllib3 dropped).
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    request: dict[str, Any] = {
        k: kwargs[k] for k in ("method", "url", "headers", "params", "json") if k in kwargs
    }
    if "data" in kwargs:
        request["content"] = kwargs["data"]
    response = TestClient(app).request(**request)
    case.validate_response(response, checks=CHECKS, headers=headers)
