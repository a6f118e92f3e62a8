"""Operations endpoints: liveness, readiness against the real database and broker, metrics."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api.app import create_app
from services.api.routes.health import check_database, head_revision
from services.devstack.broker import start_broker
from services.devstack.postgres import free_port
from services.settings import Settings
from tests.fixtures.broker import BrokerUnderTest
from tests.services.api.conftest import auth


def test_healthz_needs_no_key(api_client: TestClient) -> None:
    response = api_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_when_database_and_broker_answer(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    response = api_client.get("/readyz", headers=auth(api_keys["service"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"]
    assert body["checks"]["broker"]["ok"]
    assert body["checks"]["database"]["detail"] == f"at revision {head_revision()} (head)"
    assert body["checks"]["broker"]["detail"].startswith("CONNACK from 127.0.0.1:")


def _secrets(settings: Settings) -> list[str]:
    """What an anonymous caller must not learn: where the broker is, the schema's revision."""
    assert settings.mqtt_url is not None
    port = str(urlsplit(settings.mqtt_url).port)
    return [port, head_revision(), "127.0.0.1", "CONNACK", "revision"]


@pytest.mark.parametrize("key", [None, "up0.wrong"], ids=["no-key", "bad-key"])
def test_readyz_tells_an_anonymous_caller_only_what_is_down(
    api_client: TestClient, api_settings: Settings, key: str | None
) -> None:
    """Issue 11: /readyz showed everyone the broker's host and port and the migration."""
    headers = auth(key) if key else {}
    ready = api_client.get("/readyz", headers=headers)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True, "detail": None},
            "broker": {"ok": True, "detail": None},
        },
    }
    for secret in _secrets(api_settings):
        assert secret not in ready.text
    broker_down = api_settings.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{free_port()}"})
    with _down_client(broker_down) as client:
        down = client.get("/readyz", headers=headers)
    assert down.status_code == 503
    body = down.json()
    assert (body["down"], body["detail"]) == (["broker"], "down: broker")
    assert body["checks"] == {
        "database": {"ok": True, "detail": None},
        "broker": {"ok": False, "detail": None},
    }
    for secret in _secrets(broker_down):
        assert secret not in down.text


def _down_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def test_readyz_names_the_broker_when_it_is_down(
    api_settings: Settings, api_keys: dict[str, str]
) -> None:
    port = free_port()
    settings = api_settings.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{port}"})
    with _down_client(settings) as client:
        response = client.get("/readyz", headers=auth(api_keys["operator"]))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["down"] == ["broker"]
    assert body["checks"]["database"]["ok"] is True
    assert "broker" in body["detail"]
    assert f"unreachable at 127.0.0.1:{port}" in body["checks"]["broker"]["detail"]


def test_readyz_names_the_database_when_it_is_down(api_settings: Settings) -> None:
    settings = api_settings.model_copy(
        update={"database_url": f"postgresql://nobody@127.0.0.1:{free_port()}/none"}
    )
    with _down_client(settings) as client:
        response = client.get("/readyz")
        # A route that needs the database answers 503 too, not 500, once the pool gives up.
        route = client.get("/v1/sensors", headers={"X-API-Key": "up0.secret"})
    assert route.status_code == 503
    assert route.json()["title"] == "Database unavailable"
    assert response.status_code == 503
    assert response.json()["down"] == ["database"]
    # No key can be checked without the database: the detail is the probe's own.
    assert check_database(settings.database_url, head_revision()).detail.startswith("unreachable")


def test_readyz_refuses_a_database_not_migrated(
    api_settings: Settings, empty_database: str
) -> None:
    settings = api_settings.model_copy(update={"database_url": empty_database})
    with _down_client(settings) as client:
        body = client.get("/readyz").json()
    assert body["down"] == ["database"]
    # Its keys are not there to check either: the detail is the probe's own.
    assert check_database(empty_database, head_revision()).detail.startswith("at revision none")


def test_readyz_with_a_broker_that_goes_away(
    api_settings: Settings, own_broker: BrokerUnderTest
) -> None:
    settings = api_settings.model_copy(update={"mqtt_url": own_broker.url})
    with _down_client(settings) as client:
        assert client.get("/readyz").status_code == 200
        assert own_broker.handle is not None
        own_broker.handle.stop()
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]


def test_readyz_names_a_broker_that_refuses_its_credentials(
    api_settings: Settings, api_keys: dict[str, str], tmp_path: Path
) -> None:
    """A broker that is up but refuses the API's login breaks the live path: not ready."""
    broker = start_broker(tmp_path / "broker", users={"api": "the-right-one"})
    try:
        wrong = api_settings.model_copy(
            update={
                "mqtt_url": broker.url,
                "mqtt_username": "api",
                "mqtt_password": SecretStr("wrong"),
            }
        )
        with _down_client(wrong) as client:
            refused = client.get("/readyz", headers=auth(api_keys["admin"]))
        right = wrong.model_copy(update={"mqtt_password": SecretStr("the-right-one")})
        with _down_client(right) as client:
            accepted = client.get("/readyz")
    finally:
        broker.close()
    assert refused.status_code == 503
    assert refused.json()["down"] == ["broker"]
    assert "refused CONNECT" in refused.json()["checks"]["broker"]["detail"]
    assert accepted.status_code == 200, accepted.text
