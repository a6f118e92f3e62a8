"""/v1/notifications on the real app: operators and admins manage subscriptions and dead
letters; bad input is a 422 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_network
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.kpi.alerts import upsert_rule
from services.settings import Settings
from services.storage.urls import libpq_url
from tests.fixtures.broker import BrokerUnderTest
from tests.services.api import conftest as api_fixtures

from .conftest import GATEWAY_RULE, RULES, notifier, raise_alert

# The API tests' fixtures: an app on a fresh database (each storage mode), one key per role.
api_app = api_fixtures.api_app
api_client = api_fixtures.api_client
api_keys = api_fixtures.api_keys
auth = api_fixtures.auth

PATH = "/v1/notifications/subscriptions"
HOOK = {"name": "ops", "channel": "webhook", "target": "https://ops.city.example/hook"}


@pytest.fixture
def allow_networks() -> list[str]:
    """URBANPULSE_WEBHOOK_ALLOW_NETWORKS of the app; a test parametrizes it to change it."""
    return []


@pytest.fixture
def api_settings(
    database_url: str, mqtt_broker: BrokerUnderTest, allow_networks: list[str]
) -> Settings:
    return Settings(  # type: ignore[call-arg]
        database_url=database_url,
        mqtt_url=mqtt_broker.url,
        webhook_allow_networks=[ip_network(n) for n in allow_networks],
        _env_file=None,
    )


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        upsert_rule(connection, RULES[GATEWAY_RULE])
        yield connection


def test_an_operator_subscribes_lists_and_removes(
    api_client: TestClient, api_keys: dict[str, str], conn: Any
) -> None:
    operator = auth(api_keys["operator"])
    created = api_client.post(
        PATH,
        json={**HOOK, "rule_ids": [GATEWAY_RULE], "min_severity": "critical"},
        headers=operator,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert len(body["secret"]) >= 32
    assert (body["rule_ids"], body["min_severity"]) == ([GATEWAY_RULE], "critical")

    listed = api_client.get(PATH, headers=operator).json()
    assert [s["id"] for s in listed] == [body["id"]]
    assert "secret" not in listed[0]  # shown once, at creation

    assert api_client.delete(f"{PATH}/{body['id']}", headers=operator).status_code == 204
    assert api_client.get(PATH, headers=operator).json() == []
    assert api_client.delete(f"{PATH}/{body['id']}", headers=operator).status_code == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"target": "not-a-url"}, "body.target"),
        ({"channel": "email", "target": "nobody-at-city.example"}, "body.target"),
        ({"rule_ids": ["no-such-rule"]}, "body.rule_ids"),
        ({"escalate_after_s": 60, "escalate_to": "gopher://x"}, "body.escalate_to"),
        ({"min_severity": "fatal"}, "body.min_severity"),
        ({"channel": "sms"}, "body.channel"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api_client: TestClient, api_keys: dict[str, str], conn: Any, changes: dict[str, Any], field: str
) -> None:
    response = api_client.post(PATH, json={**HOOK, **changes}, headers=auth(api_keys["admin"]))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"target": "http://169.254.169.254/latest/"}, "body.target", "is a link-local address"),
        ({"target": "http://127.0.0.1:8080/hook"}, "body.target", "is a loopback address"),
        ({"target": "http://[::1]/hook"}, "body.target", "is a loopback address"),
        ({"target": "http://10.0.0.5/hook"}, "body.target", "is a private address"),
        ({"target": "http://[64:ff9b::a9fe:a9fe]/"}, "body.target", "(169.254.169.254) is a link"),
        ({"target": "https://ops:pw@ops.city.example/"}, "body.target", "user:password@"),
        ({"target": "http://[::1/hook"}, "body.target", "http:// or https://"),  # was a 500
        ({"target": "http://ops.city.example:99999/"}, "body.target", "http:// or https://"),
        (
            {"escalate_after_s": 60, "escalate_to": "http://192.168.1.1/"},
            "body.escalate_to",
            "is a private address",
        ),
    ],
)
def test_a_webhook_url_to_a_forbidden_address_is_refused_when_made(
    api_client: TestClient,
    api_keys: dict[str, str],
    conn: Any,
    changes: dict[str, Any],
    field: str,
    says: str,
) -> None:
    admin = auth(api_keys["admin"])
    response = api_client.post(PATH, json={**HOOK, **changes}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = response.json()["errors"]
    assert error["field"] == field
    assert says in error["message"]
    assert api_client.get(PATH, headers=admin).json() == []  # nothing stored


@pytest.mark.parametrize("allow_networks", [["10.20.0.0/16"]])
def test_the_allowed_networks_admit_their_addresses_when_made(
    api_client: TestClient, api_keys: dict[str, str], conn: Any
) -> None:
    admin = auth(api_keys["admin"])
    allowed = api_client.post(PATH, json={**HOOK, "target": "http://10.20.0.5/h"}, headers=admin)
    assert allowed.status_code == 201, allowed.text
    refused = api_client.post(PATH, json={**HOOK, "target": "http://10.21.0.5/h"}, headers=admin)
    assert refused.status_code == 422
    assert "URBANPULSE_WEBHOOK_ALLOW_NETWORKS" in refused.json()["errors"][0]["message"]
    # A name is taken as given (not resolved now): delivery judges the address it connects to.
    named = api_client.post(PATH, json={**HOOK, "target": "http://localhost/h"}, headers=admin)
    assert named.status_code == 201, named.text


def test_a_service_key_may_not_manage_notifications(
    api_client: TestClient, api_keys: dict[str, str], conn: Any
) -> None:
    service = auth(api_keys["service"])
    assert api_client.post(PATH, json=HOOK, headers=service).status_code == 403
    assert api_client.get("/v1/notifications/dead-letters", headers=service).status_code == 403


@pytest.mark.parametrize("allow_networks", [["127.0.0.0/8"]])  # its receiver is on loopback
def test_dead_letters_are_listed_and_replayed(
    api_client: TestClient, api_keys: dict[str, str], conn: Any, clock: Any
) -> None:
    operator = auth(api_keys["operator"])
    # Nothing listens on port 9 (discard) of 127.0.0.1: every attempt fails to connect.
    hook = {**HOOK, "target": "http://127.0.0.1:9/hook"}
    assert api_client.post(PATH, json=hook, headers=operator).status_code == 201
    alert = raise_alert(conn)
    notifier(conn, clock, max_attempts=1).run_once()

    [dead] = api_client.get("/v1/notifications/dead-letters", headers=operator).json()
    assert (dead["alert_id"], dead["attempts"], dead["transition"]) == (alert.id, 1, "raised")
    assert "unreachable" in dead["last_error"]

    replayed = api_client.post(
        f"/v1/notifications/dead-letters/{dead['id']}/replay", headers=operator
    )
    assert replayed.status_code == 200
    assert replayed.json()["attempts"] == 0
    assert api_client.get("/v1/notifications/dead-letters", headers=operator).json() == []
    again = api_client.post(f"/v1/notifications/dead-letters/{dead['id']}/replay", headers=operator)
    assert again.status_code == 404
