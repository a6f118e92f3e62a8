"""Every error is a problem-details body, and nothing unexpected leaks internals."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.problems import Problem
from services.dataio.errors import ExportError, SourceError
from services.errors import DomainError
from services.kpi.alerts.errors import AlertNotFound, InvalidArgument, InvalidTransition
from services.kpi.errors import InvalidPeriod, UnknownDistrict, UnknownKpi
from services.notify.errors import InvalidSubscription, SubscriptionNotFound
from services.storage import city_settings as cs
from services.storage.errors import NotMigratedError
from services.storage.registry import FieldsError, ManifestError, RowError
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


def _not_found(detail: str) -> dict[str, Any]:
    return {
        "type": "urn:urbanpulse:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": detail,
    }


def _invalid(field: str, message: str) -> dict[str, Any]:
    return {
        "type": "urn:urbanpulse:problem:validation",
        "title": "Invalid request",
        "status": 422,
        "detail": f"invalid input: {field}",
        "errors": [{"field": field, "message": message}],
    }


# Each domain error as the routes used to translate it by hand (the bodies they answered).
DOMAIN_ERRORS = [
    pytest.param(AlertNotFound(7), _not_found("no alert 7"), id="alert-not-found"),
    pytest.param(
        InvalidTransition(7, "cleared", "acknowledged"),
        {
            "type": "urn:urbanpulse:problem:conflict",
            "title": "Conflict",
            "status": 409,
            "detail": "alert 7 is cleared: it cannot be acknowledged",
            "state": "cleared",
        },
        id="alert-transition",
    ),
    pytest.param(
        InvalidArgument("state", "x", "one of open"),
        _invalid("query.state", "state='x': one of open"),
        id="alert-filter",
    ),
    pytest.param(
        InvalidPeriod("the year around 9999 is out of range", "at"),
        _invalid("query.at", "invalid period: the year around 9999 is out of range"),
        id="kpi-period-at",
    ),
    pytest.param(
        InvalidPeriod("year buckets of this range run out of the calendar", "grain"),
        _invalid(
            "query.grain", "invalid period: year buckets of this range run out of the calendar"
        ),
        id="kpi-period-grain",
    ),
    pytest.param(
        UnknownDistrict(["nowhere"]),
        _invalid("query.district", "unknown district(s): nowhere"),
        id="kpi-district",
    ),
    pytest.param(
        UnknownKpi("AIR-9", "in the catalog but not computed yet"),
        _not_found("unknown KPI 'AIR-9': in the catalog but not computed yet"),
        id="kpi-not-computed",
    ),
    pytest.param(
        cs.UnknownSettingError("tz", "unknown setting"),
        _not_found(f"no setting 'tz'; one of {', '.join(cs.SETTINGS)}"),
        id="setting-unknown",
    ),
    pytest.param(
        cs.CitySettingError("timezone", "timezone is a city setting"),
        _invalid("path.name", "timezone is a city setting"),
        id="setting-city-only",
    ),
    pytest.param(
        cs.SettingError("timezone", "unknown timezone"),
        _invalid("body.value", "timezone: unknown timezone"),
        id="setting-refused",
    ),
    pytest.param(
        cs.UnknownDistrictError("d9"), _not_found("no district 'd9'"), id="setting-district"
    ),
    pytest.param(
        InvalidSubscription("url", "ftp://x", "an http:// or https:// URL with a host"),
        _invalid("body.url", "an http:// or https:// URL with a host"),
        id="subscription-field",
    ),
    pytest.param(SubscriptionNotFound(3), _not_found("no subscription 3"), id="subscription"),
    pytest.param(
        NotMigratedError(),
        {
            "type": "urn:urbanpulse:problem:unavailable",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "the database has no UrbanPulse schema: run `urbanpulse db upgrade`",
        },
        id="not-migrated",
    ),
    # The import and export routes (routes/dataio.py), the registry's PATCH routes and the bulk
    # route (routes/registry.py, routes/bulk.py) built these by hand.
    pytest.param(
        SourceError("bad mapping 'x'", "map"), _invalid("query.map", "bad mapping 'x'"), id="map"
    ),
    pytest.param(
        SourceError("unknown time zone 'Mars/Base'", "timezone"),
        _invalid("query.timezone", "unknown time zone 'Mars/Base'"),
        id="import-timezone",
    ),
    pytest.param(
        SourceError("not a Parquet file: x"),
        _invalid("body", "not a Parquet file: x"),
        id="import-file",
    ),
    pytest.param(
        ExportError("start must be before end", "end"),
        _invalid("query.end", "start must be before end"),
        id="export-period",
    ),
    pytest.param(
        ExportError("no KPI of domain 'x'"), _invalid("query", "no KPI of domain 'x'"), id="export"
    ),
    pytest.param(
        FieldsError([("area_km2", "must be positive"), ("population", "not a number")]),
        {
            **_invalid("body.area_km2", "must be positive"),
            "detail": "invalid input: body.area_km2, body.population",
            "errors": [
                {"field": "body.area_km2", "message": "must be positive"},
                {"field": "body.population", "message": "not a number"},
            ],
        },
        id="registry-fields",
    ),
    pytest.param(
        ManifestError(
            [RowError("sensors", 1, "kind", "unknown kind"), RowError("gateways", 0, None, "x")]
        ),
        {
            **_invalid("sensors[1].kind", "unknown kind"),
            "detail": "2 bad row(s); nothing was registered",
            "errors": [
                {"field": "sensors[1].kind", "message": "unknown kind"},
                {"field": "gateways[0]", "message": "x"},
            ],
            "rows": [
                {"section": "sensors", "index": 1, "field": "kind", "message": "unknown kind"},
                {"section": "gateways", "index": 0, "field": None, "message": "x"},
            ],
        },
        id="bulk-manifest",
    ),
]


@pytest.mark.parametrize(("error", "body"), DOMAIN_ERRORS)
def test_domain_errors_answer_as_they_describe_themselves(
    api_app: FastAPI, error: DomainError, body: dict[str, Any]
) -> None:
    """One handler answers every domain error with the body its route used to build by hand."""

    @api_app.get("/v1/domain-error")
    def fail() -> None:
        raise error

    with TestClient(api_app) as client:
        response = client.get("/v1/domain-error")
    assert response.status_code == body["status"]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {**body, "instance": "/v1/domain-error"}


def test_metrics_count_by_route_template(api_client: TestClient, api_keys: dict[str, str]) -> None:
    for sensor in ("a", "b", "c"):
        api_client.get(f"/v1/sensors/{sensor}", headers=auth(api_keys["admin"]))
    text = api_client.get("/metrics").text
    labels = 'method="GET",route="/v1/sensors/{sensor_id}",status="404"'
    assert f"urbanpulse_api_requests_total{{{labels}}} 3.0" in text
    assert "urbanpulse_api_request_duration_seconds_bucket" in text
    assert "/v1/sensors/a" not in text
