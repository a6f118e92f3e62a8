"""Operations endpoints: liveness, readiness against the real database and broker, metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api.app import create_app
from services.devstack.broker import start_broker
from services.devstack.postgres import free_port
from services.settings import Settings
from tests.fixtures.broker import BrokerUnderTest


def test_healthz_needs_no_key(api_client: TestClient) -> None:
    response = api_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_when_database_and_broker_answer(api_client: TestClient) -> None:
    response = api_client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"]
    assert body["checks"]["broker"]["ok"]


def _down_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def test_readyz_names_the_broker_when_it_is_down(api_settings: Settings) -> None:
    settings = api_settings.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{free_port()}"})
    with _down_client(settings) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["down"] == ["broker"]
    assert body["checks"]["database"]["ok"] is True
    assert "broker" in body["detail"]


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
    assert "unreachable" in response.json()["checks"]["database"]["detail"]


def test_readyz_refuses_a_database_not_migrated(
    api_settings: Settings, empty_database: str
) -> None:
    settings = api_settings.model_copy(update={"database_url": empty_database})
    with _down_client(settings) as client:
        body = client.get("/readyz").json()
    assert body["down"] == ["database"]
    assert body["checks"]["database"]["detail"].startswith("at revision none")


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
    api_settings: Settings, tmp_path: Path
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
            refused = client.get("/readyz")
        right = wrong.model_copy(update={"mqtt_password": SecretStr("the-right-one")})
        with _down_client(right) as client:
            accepted = client.get("/readyz")
    finally:
        broker.close()
    assert refused.status_code == 503
    assert refused.json()["down"] == ["broker"]
    assert "refused CONNECT" in refused.json()["checks"]["broker"]["detail"]
    assert accepted.status_code == 200, accepted.text
