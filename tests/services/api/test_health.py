"""Operations endpoints: liveness, readiness against the real database and broker, metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient


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
