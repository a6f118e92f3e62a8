"""/v1/kpis over HTTP: catalog, values with rating and coverage, series, current values, baseline,
and problem bodies for bad input. The KPI arithmetic itself is tested in tests/services/kpi/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.kpi import baseline, engine
from services.kpi.catalog import KPIS
from services.settings import Settings
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter
from tests.services.kpi.conftest import City

# Two whole UTC days, well in the past: both rollup modes have them complete.
DAY1 = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)


@pytest.fixture
def city(database_url: str) -> Iterator[City]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        mode = storage_mode(conn)
        yield City(conn=conn, mode=mode, writer=ReadingWriter(conn, mode))


@pytest.fixture
def air(city: City) -> City:
    """d01: one PM2.5 station, every minute, 10 ug/m3 on day 1 and 20 on day 2 (both days
    complete). d02: a station that said nothing."""
    city.district("d01")
    city.district("d02")
    station = city.sensor("air-d01-1", "air_quality", "d01", interval_s=60)
    city.sensor("air-d02-1", "air_quality", "d02", interval_s=60)
    city.series(station, "pm25", DAY1, DAY2, step_s=60, value=10.0, refresh=False)
    city.series(station, "pm25", DAY2, DAY3, step_s=60, value=20.0)
    return city


def _get(client: TestClient, key: str, path: str, **params: object) -> dict[str, object]:
    response = client.get(path, params=params, headers={"X-API-Key": key})  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_the_catalog_lists_every_kpi(api_client: TestClient, api_keys: dict[str, str]) -> None:
    response = api_client.get("/v1/kpis", headers={"X-API-Key": api_keys["service"]})
    assert response.status_code == 200
    assert [k["id"] for k in response.json()] == list(KPIS)
    one = _get(api_client, api_keys["service"], "/v1/kpis/AIR-1")
    assert (one["unit"], one["better"], one["band"]) == (
        "ug/m3",
        "lower",
        {"target": 15.0, "warning": 25.0},
    )


def test_values_per_district_and_city_with_rating_and_coverage(
    air: City, api_client: TestClient, api_keys: dict[str, str]
) -> None:
    body = _get(
        api_client,
        api_keys["operator"],
        "/v1/kpis/AIR-1/values",
        start=DAY1.isoformat(),
        end=DAY3.isoformat(),
    )
    values = {v["scope"]: v for v in body["values"]}  # type: ignore[attr-defined]
    # d01: two valid station-days, means 10 and 20 -> (10 + 20) / 2 = 15 <= 15: met.
    assert values["d01"]["value"] == pytest.approx(15.0)
    assert values["d01"]["rating"] == "met"
    assert values["d01"]["coverage"]["sources_used"] == 1
    # d02's station was silent: never rated good.
    assert values["d02"]["value"] is None
    assert values["d02"]["rating"] == "insufficient_data"
    assert set(values) == {"d01", "d02", "city"}


def test_a_daily_series(air: City, api_client: TestClient, api_keys: dict[str, str]) -> None:
    body = _get(
        api_client,
        api_keys["service"],
        "/v1/kpis/AIR-1/series",
        start=DAY1.isoformat(),
        end=DAY3.isoformat(),
        grain="day",
        district="d01",
    )
    series = [(v["scope"], v["value"], v["rating"]) for v in body["values"]]  # type: ignore[attr-defined]
    # d01: day 1 mean 10 (met, <= 15), day 2 mean 20 (warning, <= 25). The city has two
    # stations and one is silent: 50 % of its sources, below the 75 % threshold.
    assert series == [
        ("d01", pytest.approx(10.0), "met"),
        ("city", pytest.approx(10.0), "insufficient_data"),
        ("d01", pytest.approx(20.0), "warning"),
        ("city", pytest.approx(20.0), "insufficient_data"),
    ]
    city_only = _get(
        api_client,
        api_keys["service"],
        "/v1/kpis/AIR-1/series",
        start=DAY1.isoformat(),
        end=DAY3.isoformat(),
    )
    assert [v["scope"] for v in city_only["values"]] == ["city", "city"]  # type: ignore[attr-defined]


def test_current_values_come_from_the_monitor(
    air: City, api_client: TestClient, api_keys: dict[str, str]
) -> None:
    engine.refresh_current(air.conn)
    body = _get(api_client, api_keys["operator"], "/v1/kpis/current", period="month", scope="city")
    assert {v["kpi_id"] for v in body["values"]} == set(engine.computed_kpis())  # type: ignore[attr-defined]
    this_month = _get(api_client, api_keys["operator"], "/v1/kpis/AIR-1/values", period="month")
    assert {v["scope"] for v in this_month["values"]} == {"d01", "d02", "city"}  # type: ignore[attr-defined]


def test_the_current_month_is_the_citys_and_comes_from_the_monitor(
    air: City, api_client: TestClient, api_keys: dict[str, str]
) -> None:
    air.setting("timezone", "Asia/Tokyo")
    engine.refresh_current(air.conn)
    stored = air.conn.execute(
        "SELECT period_start, computed_at FROM kpi_current "
        "WHERE kpi_id = 'AIR-1' AND scope = 'd01' AND period = 'month'"
    ).fetchone()
    assert stored is not None
    body = _get(api_client, api_keys["operator"], "/v1/kpis/AIR-1/values", period="month")
    tokyo_month, _ = engine.period_bounds("month", datetime.now(UTC), "Asia/Tokyo")
    # Tokyo's month starts at 15:00 UTC the day before, not at midnight UTC.
    assert datetime.fromisoformat(str(body["period_start"])) == tokyo_month == stored[0]
    # Served from kpi_current: the monitor's computation time, not a new one.
    assert datetime.fromisoformat(str(body["computed_at"])) == stored[1]


def test_baseline_and_progress(air: City, api_client: TestClient, api_keys: dict[str, str]) -> None:
    baseline.set_baseline(air.conn, DAY2, DAY3, ["AIR-1"], recorded_by="test")
    recorded = api_client.get(
        "/v1/kpis/AIR-1/baseline", headers={"X-API-Key": api_keys["operator"]}
    ).json()
    assert {b["scope"]: b["value"] for b in recorded}["d01"] == pytest.approx(20.0)
    body = _get(
        api_client,
        api_keys["operator"],
        "/v1/kpis/AIR-1/values",
        start=DAY1.isoformat(),
        end=DAY2.isoformat(),
        district="d01",
    )
    [d01] = [v for v in body["values"] if v["scope"] == "d01"]  # type: ignore[attr-defined]
    # Baseline 20, now 10; lower is better, so the change is +10 (better), +50 %.
    assert d01["baseline"]["change"] == pytest.approx(10.0)
    assert d01["baseline"]["change_pct"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/v1/kpis/XYZ-9", {}, 404, None),
        ("/v1/kpis/XYZ-9/values", {}, 404, None),
        ("/v1/kpis/AIR-1/values", {"period": "decade"}, 422, "query.period"),
        ("/v1/kpis/AIR-1/values", {"start": "2026-01-02T00:00:00Z"}, 422, "query.end"),
        (
            "/v1/kpis/AIR-1/values",
            {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            422,
            "query.end",
        ),
        ("/v1/kpis/AIR-1/values", {"start": "2026-01-02T00:00:00"}, 422, "query.start"),
        ("/v1/kpis/AIR-1/values", {"district": "nowhere"}, 422, "query.district"),
        (
            "/v1/kpis/AIR-1/values",
            {"period": "year", "at": "9999-06-01T00:00:00Z"},
            422,
            "query.at",
        ),
        (
            "/v1/kpis/AIR-1/series",
            {"start": "9999-01-01T00:00:00Z", "end": "9999-12-31T00:00:00Z", "grain": "year"},
            422,
            "query.grain",
        ),
        ("/v1/kpis/AIR-1/series", {"start": "2026-01-01T00:00:00Z"}, 422, "query.end"),
        (
            "/v1/kpis/AIR-1/series",
            {"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z", "grain": "hour"},
            422,
            "query.grain",
        ),
    ],
)
def test_bad_requests_get_problem_bodies(
    api_client: TestClient,
    api_keys: dict[str, str],
    path: str,
    params: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    response = api_client.get(path, params=params, headers={"X-API-Key": api_keys["operator"]})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    if field is not None:
        assert field in {e["field"] for e in body["errors"]}, body


@pytest.mark.parametrize(("ttl_s", "cached"), [(60, True), (0, False)], ids=["cached", "no-cache"])
def test_a_computed_answer_is_cached_as_long_as_the_setting_says(
    air: City, api_settings: Settings, api_keys: dict[str, str], ttl_s: int, cached: bool
) -> None:
    """URBANPULSE_API_KPI_CACHE_TTL: how long the same question gets the same answer, as the
    Cache-Control header states."""
    settings = api_settings.model_copy(update={"api_kpi_cache_ttl": timedelta(seconds=ttl_s)})
    params = {"start": DAY1.isoformat(), "end": DAY3.isoformat()}
    with TestClient(create_app(settings)) as client:
        answers = [
            client.get(
                "/v1/kpis/AIR-1/values", params=params, headers={"X-API-Key": api_keys["operator"]}
            )
            for _ in range(2)
        ]
    assert [a.status_code for a in answers] == [200, 200]
    assert {a.headers["cache-control"] for a in answers} == {f"private, max-age={ttl_s}"}
    first, second = (a.json()["computed_at"] for a in answers)
    assert (first == second) is cached
