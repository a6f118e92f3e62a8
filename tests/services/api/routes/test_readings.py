"""Readings: the resolution chosen for a range, rollup points, CSV, and range errors."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.kinds import QUANTITIES
from services.api.routes.readings import Resolution, choose
from services.storage import rollups
from services.storage.modes import storage_mode
from services.storage.writer import ReadingWriter
from tests.services.api.conftest import auth

Db = psycopg.Connection[tuple[object, ...]]

DAY = 86400.0


@pytest.mark.parametrize(
    ("span_s", "interval_s", "expected"),
    [
        (3600, 60, Resolution.RAW),  # 60 points
        (DAY, 60, Resolution.RAW),  # 1440 points
        (2 * DAY, 60, Resolution.HOUR),  # 2880 raw points and 2880 minutes: too many
        (30 * 3600, 30, Resolution.MINUTE),  # 3600 raw points: too many; 1800 minutes
        (2 * DAY, 900, Resolution.RAW),  # a 15-minute meter: 192 points
        (30 * DAY, 60, Resolution.HOUR),  # 720 hours
        (365 * DAY, 60, Resolution.DAY),  # 8760 hours: too many
        (10 * 365 * DAY, 60, Resolution.DAY),  # the coarsest, however many
    ],
)
def test_auto_picks_the_finest_resolution_within_2000_points(
    span_s: float, interval_s: float, expected: Resolution
) -> None:
    assert choose(Resolution.AUTO, span_s, interval_s) is expected


def test_explicit_resolution_is_kept() -> None:
    assert choose(Resolution.HOUR, 60, 60) is Resolution.HOUR


NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
def meter(api_db: Db, database_url: str) -> int:
    """A noise meter with a reading a minute over the last 2 days (value = minute of the hour),
    one a day over the last 300 days, all rolled up."""
    row = api_db.execute(
        "INSERT INTO sensors (id, kind, domain, interval_s) "
        "VALUES ('n-1', 'noise', 'environment', 60) RETURNING key"
    ).fetchone()
    assert row is not None
    key = int(row[0])  # type: ignore[call-overload]
    laeq = QUANTITIES["laeq"].key
    start = NOW - timedelta(days=2)
    rows = [
        ((start + timedelta(minutes=i)).timestamp(), key, laeq, float(i % 60))
        for i in range(2 * 1440)
    ]
    rows += [
        ((NOW - timedelta(days=d, hours=1)).timestamp(), key, laeq, 50.0) for d in range(3, 300)
    ]
    with psycopg.connect(database_url) as conn:
        mode = storage_mode(conn)
        ReadingWriter(conn, mode).write(rows)
        conn.commit()
        rollups.refresh(conn, mode, now=NOW + timedelta(minutes=1))
    return key


@pytest.fixture
def reader(api_client: TestClient, api_keys: dict[str, str]) -> TestClient:
    api_client.headers.update(auth(api_keys["service"]))
    return api_client


def _get(client: TestClient, **params: object) -> dict[str, object]:
    response = client.get("/v1/sensors/n-1/readings", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.usefixtures("meter")
def test_an_hour_is_raw(reader: TestClient) -> None:
    start = NOW - timedelta(hours=1)
    body = _get(reader, start=start.isoformat(), end=NOW.isoformat())
    assert body["resolution"] == "raw"
    assert body["quantity"] == "laeq"  # the kind's only quantity: no need to name it
    points = body["points"]
    assert isinstance(points, list)
    assert len(points) == 60
    assert set(points[0]) >= {"time", "value"}
    assert points[0]["count"] is None


@pytest.mark.usefixtures("meter")
def test_a_month_is_hourly_means_and_a_year_is_daily(reader: TestClient) -> None:
    start = NOW - timedelta(days=30)
    body = _get(reader, start=start.isoformat(), end=NOW.isoformat(), quantity="laeq")
    assert body["resolution"] == "1h"
    points = body["points"]
    assert isinstance(points, list)
    full = [p for p in points if p["count"] == 60]
    assert full, points[-5:]
    # Every full hour holds the minutes 0..59 once: mean 29.5, min 0, max 59.
    assert {(p["value"], p["min"], p["max"]) for p in full} == {(29.5, 0.0, 59.0)}
    year = _get(reader, start=(NOW - timedelta(days=365)).isoformat(), end=NOW.isoformat())
    assert year["resolution"] == "1d"
    days = year["points"]
    assert isinstance(days, list)
    assert 290 <= len(days) <= 300
    assert sum(p["count"] for p in days) == 297 + 2 * 1440


@pytest.mark.usefixtures("meter")
def test_csv_by_parameter_and_by_accept(reader: TestClient) -> None:
    start = (NOW - timedelta(hours=3)).isoformat()
    by_param = reader.get(
        "/v1/sensors/n-1/readings", params={"start": start, "resolution": "1h", "format": "csv"}
    )
    by_accept = reader.get(
        "/v1/sensors/n-1/readings",
        params={"start": start, "resolution": "1h"},
        headers={"Accept": "text/csv"},
    )
    assert by_param.status_code == 200
    assert by_param.headers["content-type"].startswith("text/csv")
    assert by_param.text == by_accept.text
    rows = list(csv.DictReader(io.StringIO(by_param.text)))
    assert list(rows[0]) == ["time", "value", "min", "max", "count"]
    assert 3 <= len(rows) <= 4
    assert int(rows[1]["count"]) == 60


@pytest.mark.usefixtures("meter")
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "query.end"),
        ({"quantity": "pm25"}, "query.quantity"),
        ({"quantity": "no-such"}, "query.quantity"),
        ({"resolution": "raw", "start": "2000-01-01T00:00:00Z"}, "query.resolution"),
        ({"resolution": "1m", "start": "2000-01-01T00:00:00Z"}, "query.resolution"),
        ({"resolution": "5m"}, "query.resolution"),
        ({"start": "yesterday"}, "query.start"),
        ({"start": "2026-01-01T00:00:00"}, "query.start"),  # no time zone
        ({"format": "xml"}, "query.format"),
    ],
)
def test_bad_ranges_name_the_field(reader: TestClient, params: dict[str, str], field: str) -> None:
    response = reader.get("/v1/sensors/n-1/readings", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in response.json()["errors"]} == {field}


def test_a_kind_with_several_quantities_needs_one_named(reader: TestClient, api_db: Db) -> None:
    api_db.execute("INSERT INTO sensors (id, kind, domain) VALUES ('aq', 'air_quality', 'x')")
    response = reader.get("/v1/sensors/aq/readings")
    assert response.status_code == 422
    assert "pm25" in response.json()["errors"][0]["message"]
    assert reader.get("/v1/sensors/aq/readings?quantity=pm25").json()["points"] == []
    assert reader.get("/v1/sensors/none/readings").status_code == 404


@pytest.mark.usefixtures("meter")
def test_sensor_detail_has_the_last_reading(reader: TestClient) -> None:
    body = reader.get("/v1/sensors/n-1").json()
    [last] = body["last"]
    assert last["quantity"] == "laeq"
    assert last["value"] == float((2 * 1440 - 1) % 60)
    assert datetime.fromisoformat(last["time"]) == NOW - timedelta(minutes=1)
