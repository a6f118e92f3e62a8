"""Every error is a problem-details body, and nothing unexpected leaks internals."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.problems import Problem
from tests.services.api.conftest import auth


def test_unknown_route_is_a_404_problem(api_client: TestClient) -> None:
    response = api_client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "urn:urbanpulse:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "no resource at /v1/nothing-here",
        "instance": "/v1/nothing-here",
    }


def test_wrong_method_is_a_405_problem(api_client: TestClient, api_keys: dict[str, str]) -> None:
    response = api_client.put("/v1/sensors", headers=auth(api_keys["admin"]))
    assert response.status_code == 405
    assert response.json()["detail"] == "PUT is not allowed on /v1/sensors"
    assert "GET" in response.headers["allow"]


def test_unexpected_error_is_a_500_problem_without_internals(
    api_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    @api_app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    @api_app.get("/v1/teapot")
    def teapot() -> None:
        raise Problem(418, detail="short and stout", spout=1)

    with TestClient(api_app) as client, caplog.at_level(logging.ERROR):
        response = client.get("/v1/boom")
        teapot_response = client.get("/v1/teapot")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in response.text
    assert response.json()["detail"] == "an unexpected error occurred; it was logged"
    assert "hunter2" in caplog.text  # logged for the operator, not sent to the client
    assert teapot_response.json() == {
        "type": "urn:urbanpulse:problem:418",
        "title": "I'm a Teapot",
        "status": 418,
        "detail": "short and stout",
        "instance": "/v1/teapot",
        "spout": 1,
    }


def test_metrics_count_by_route_template(api_client: TestClient, api_keys: dict[str, str]) -> None:
    for sensor in ("a", "b", "c"):
        api_client.get(f"/v1/sensors/{sensor}", headers=auth(api_keys["admin"]))
    text = api_client.get("/metrics").text
    labels = 'method="GET",route="/v1/sensors/{sensor_id}",status="404"'
    assert f"urbanpulse_api_requests_total{{{labels}}} 3.0" in text
    assert "urbanpulse_api_request_duration_seconds_bucket" in text
    assert "/v1/sensors/a" not in text
