"""/v1/notifications on the real app: operators and admins manage subscriptions and dead
letters; bad input is a 422 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.kpi.alerts import upsert_rule
from services.storage.urls import libpq_url
from tests.services.api import conftest as api_fixtures

from .conftest import GATEWAY_RULE, RULES, notifier, raise_alert

# The API tests' fixtures: an app on a fresh database (each storage mode), one key per role.
api_settings = api_fixtures.api_settings
api_app = api_fixtures.api_app
api_client = api_fixtures.api_client
api_keys = api_fixtures.api_keys
auth = api_fixtures.auth

PATH = "/v1/notifications/subscriptions"
HOOK = {"name": "ops", "channel": "webhook", "target": "https://ops.city.example/hook"}


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


def test_a_service_key_may_not_manage_notifications(
    api_client: TestClient, api_keys: dict[str, str], conn: Any
) -> None:
    service = auth(api_keys["service"])
    assert api_client.post(PATH, json=HOOK, headers=service).status_code == 403
    assert api_client.get("/v1/notifications/dead-letters", headers=service).status_code == 403


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
