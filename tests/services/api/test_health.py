"""Operations endpoints: liveness, readiness against the real database and broker, metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.api.app import create_app
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
