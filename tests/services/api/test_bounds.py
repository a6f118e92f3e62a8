"""What one request may cost (issue 10): ranges off the hour answered exactly from the tiled
rollups, ranges past a limit refused with a 422 naming it, and a statement stopped by its
timeout answered 504 saying so.

The data: one PM2.5 station reading every 20 s for two days and a half, each reading a
different value (a wave with a drift), so a bucket's mean, min and max depend on exactly which
readings fall in it: a range whose edge bucket took a whole minute, hour or day more or less
would show.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.kinds import QUANTITIES
from services.api.app import create_app
from services.api.routes.readings import Resolution, rollup_query
from services.settings import Settings
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter
from tests.services.api.conftest import auth
from tests.services.kpi.conftest import City
from tests.services.storage.plans import raw_scans

DAY1 = (datetime.now(UTC) - timedelta(days=4)).replace(hour=0, minute=0, second=0, microsecond=0)
END = DAY1 + timedelta(days=2, hours=12)
STEP = timedelta(seconds=20)
SECOND = timedelta(seconds=1)
# Off the day, the hour and the minute at both ends.
START_OFF = DAY1 + timedelta(hours=5, minutes=17, seconds=30)
END_OFF = DAY1 + timedelta(days=2, hours=7, minutes=43, seconds=10)
# Off the day and the hour, on the minute: no raw readings needed.
START_MINUTE = DAY1 + timedelta(hours=5, minutes=17)
END_MINUTE = DAY1 + timedelta(days=2, hours=7, minutes=43)


def _value(moment: datetime) -> float:
    i = (moment - DAY1) // STEP
    return round(20 + 15 * math.sin(i / 53.0) + i / 900.0, 6)


def _readings() -> list[tuple[datetime, float]]:
    out = []
    moment = DAY1
    while moment < END:
        out.append((moment, _value(moment)))
        moment += STEP
    return out


@pytest.fixture
def station(database_url: str) -> Iterator[City]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        mode = storage_mode(conn)
        city = City(conn=conn, mode=mode, writer=ReadingWriter(conn, mode))
        city.district("d01")
        key = city.sensor("air-d01-1", "air_quality", "d01", interval_s=20)
        city.series(key, "pm25", DAY1, END, step_s=20, value=_value)
        yield city


def _get(client: TestClient, key: str, path: str, **params: object) -> dict[str, object]:
    response = client.get(path, params=params, headers=auth(key))  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _utc_day_pieces(lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    """[lo, hi) cut at UTC midnights: the station-days of a UTC city."""
    pieces = []
    while lo < hi:
        midnight = lo.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        pieces.append((lo, min(midnight, hi)))
        lo = pieces[-1][1]
    return pieces


def _mean(lo: datetime, hi: datetime) -> float | None:
    """The station-day's mean, when it holds 75 % of the readings owed (every 20 s)."""
    values = [v for t, v in _readings() if lo <= t < hi]
    owed = (hi - lo) / STEP
    return sum(values) / len(values) if values and len(values) >= 0.75 * owed else None


def _air1(lo: datetime, hi: datetime) -> float:
    """AIR-1 from the raw readings: the mean of the valid station-days' means."""
    means = [m for a, b in _utc_day_pieces(lo, hi) if (m := _mean(a, b)) is not None]
    return sum(means) / len(means)


@pytest.mark.usefixtures("station")
def test_kpi_values_off_the_hour_are_those_of_the_raw_readings(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    for lo, hi in [
        (START_OFF, END_OFF),
        (DAY1, DAY1 + timedelta(days=2)),  # whole days
        # 10 s before midnight (no reading: an invalid station-day) and 40 s after (two).
        (DAY1 + timedelta(hours=23, minutes=59, seconds=50), DAY1 + timedelta(days=1, seconds=40)),
    ]:
        body = _get(
            api_client,
            api_keys["operator"],
            "/v1/kpis/AIR-1/values",
            start=lo.isoformat(),
            end=hi.isoformat(),
            district="d01",
        )
        values = {v["scope"]: v["value"] for v in body["values"]}  # type: ignore[attr-defined]
        assert values["d01"] == pytest.approx(_air1(lo, hi), rel=1e-9), (lo, hi)


@pytest.mark.usefixtures("station")
def test_a_series_off_the_hour_is_cut_exactly(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    body = _get(
        api_client,
        api_keys["operator"],
        "/v1/kpis/AIR-1/series",
        start=START_OFF.isoformat(),
        end=END_OFF.isoformat(),
        grain="day",
        district="d01",
        city="false",
    )
    got = [(v["period_start"], v["value"]) for v in body["values"]]  # type: ignore[attr-defined]
    pieces = _utc_day_pieces(START_OFF, END_OFF)
    assert [datetime.fromisoformat(start) for start, _ in got] == [lo for lo, _ in pieces]
    for (_, value), (lo, hi) in zip(got, pieces, strict=True):
        assert value == pytest.approx(_mean(lo, hi), rel=1e-9)


@pytest.mark.usefixtures("station")
@pytest.mark.parametrize(("start", "end"), [(START_OFF, END_OFF), (START_MINUTE, END_MINUTE)])
def test_readings_off_the_hour_cut_their_edge_buckets_exactly(
    api_client: TestClient, api_keys: dict[str, str], start: datetime, end: datetime
) -> None:
    body = _get(
        api_client,
        api_keys["service"],
        "/v1/sensors/air-d01-1/readings",
        quantity="pm25",
        start=start.isoformat(),
        end=end.isoformat(),
        resolution="1h",
    )
    points = body["points"]
    assert isinstance(points, list)
    # Expected: the first point [start, next hour) stamped start, whole hours, the last one
    # [end's hour, end).
    edges = [start]
    moment = start.replace(minute=0, second=0) + timedelta(hours=1)
    while moment < end:
        edges.append(moment)
        moment += timedelta(hours=1)
    edges.append(end)
    readings = _readings()
    expected = []
    for lo, hi in pairwise(edges):
        inside = [v for t, v in readings if lo <= t < hi]
        expected.append((lo, sum(inside) / len(inside), min(inside), max(inside), len(inside)))
    got = [
        (datetime.fromisoformat(p["time"]), p["value"], p["min"], p["max"], p["count"])
        for p in points
    ]
    assert len(got) == len(expected)
    for have, want in zip(got, expected, strict=True):
        assert have[0] == want[0]
        assert have[1] == pytest.approx(want[1], rel=1e-12)
        assert have[2:] == want[2:]


@pytest.mark.usefixtures("station")
def test_readings_on_whole_minutes_plan_no_raw_readings(database_url: str) -> None:
    pm25 = QUANTITIES["pm25"].key
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("SELECT key FROM sensors WHERE id = 'air-d01-1'").fetchone()
        assert row is not None
        key = int(str(row[0]))
        whole = raw_scans(conn, *rollup_query(Resolution.HOUR, key, pm25, START_MINUTE, END_MINUTE))
        cut = raw_scans(
            conn, *rollup_query(Resolution.HOUR, key, pm25, START_MINUTE, END_MINUTE + SECOND)
        )
        # TimescaleDB's real-time aggregation reads the newest chunks of readings under the
        # rollups whatever the bounds; a cut minute's raw legs come on top of it.
        assert whole < cut
        if storage_mode(conn) == "partitioned":
            assert whole == 0


def _refusal(response: object, field: str, setting: str) -> None:
    assert response.status_code == 422, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["errors"][0]["field"] == field
    assert setting in body["errors"][0]["message"]
    assert body["limit"]["setting"] == setting


def test_absurd_ranges_are_refused_naming_the_limit(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    headers = auth(api_keys["operator"])
    absurd = {"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"}
    response = api_client.get("/v1/kpis/AIR-1/values", params=absurd, headers=headers)
    _refusal(response, "query.start", "URBANPULSE_API_KPI_MAX_SPAN")
    response = api_client.get("/v1/kpis/AIR-1/series", params=absurd, headers=headers)
    _refusal(response, "query.start", "URBANPULSE_API_KPI_MAX_SPAN")
    year = {"start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:30Z", "grain": "hour"}
    response = api_client.get("/v1/kpis/AIR-1/series", params=year, headers=headers)
    _refusal(response, "query.grain", "URBANPULSE_API_KPI_MAX_BUCKETS")
    assert "8761" in response.json()["errors"][0]["message"]


@pytest.mark.usefixtures("station")
def test_readings_ranges_past_a_resolutions_limit_are_refused(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    headers = auth(api_keys["service"])
    path = "/v1/sensors/air-d01-1/readings"
    end = datetime(2026, 1, 1, tzinfo=UTC)

    def ask(days: float, resolution: str) -> object:
        params = {
            "quantity": "pm25",
            "start": (end - timedelta(days=days)).isoformat(),
            "end": end.isoformat(),
            "resolution": resolution,
        }
        return api_client.get(path, params=params, headers=headers)

    _refusal(ask(32, "raw"), "query.resolution", "URBANPULSE_API_MAX_SPAN_RAW")
    _refusal(ask(63, "1m"), "query.resolution", "URBANPULSE_API_MAX_SPAN_1M")
    assert ask(62, "1m").status_code == 200  # type: ignore[attr-defined]
    absurd = {"quantity": "pm25", "start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"}
    response = api_client.get(path, params=absurd, headers=headers)
    _refusal(response, "query.start", "URBANPULSE_API_MAX_SPAN_1D")


@pytest.fixture
def tight_client(api_settings: Settings) -> Iterator[TestClient]:
    """The API with tiny limits: 300 ms statement timeouts, KPIs over at most 2 days."""
    settings = api_settings.model_copy(
        update={
            "api_statement_timeout_kpis": timedelta(milliseconds=300),
            "api_statement_timeout_readings": timedelta(milliseconds=300),
            "api_kpi_max_span": timedelta(days=2),
        }
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.usefixtures("station")
def test_the_span_limit_is_a_setting(tight_client: TestClient, api_keys: dict[str, str]) -> None:
    headers = auth(api_keys["operator"])
    ok = {"start": DAY1.isoformat(), "end": (DAY1 + timedelta(days=2)).isoformat()}
    assert tight_client.get("/v1/kpis/AIR-1/values", params=ok, headers=headers).status_code == 200
    longer = {**ok, "end": (DAY1 + timedelta(days=2, seconds=1)).isoformat()}
    response = tight_client.get("/v1/kpis/AIR-1/values", params=longer, headers=headers)
    _refusal(response, "query.start", "URBANPULSE_API_KPI_MAX_SPAN")
    assert "at most 2 days" in response.json()["detail"] + response.json()["errors"][0]["message"]


@pytest.mark.usefixtures("station")
def test_a_statement_past_its_timeout_is_a_504_that_says_so(
    tight_client: TestClient, api_keys: dict[str, str], database_url: str
) -> None:
    headers = auth(api_keys["operator"])
    day_off_the_hour = {
        "start": START_OFF.isoformat(),
        "end": (START_OFF + timedelta(days=1)).isoformat(),
    }
    # Another session holds the readings table: every statement reading it waits, and
    # PostgreSQL stops it at the request's statement timeout.
    with psycopg.connect(libpq_url(database_url)) as holder:
        holder.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        kpi = tight_client.get(
            "/v1/kpis/AIR-1/values",
            params=day_off_the_hour,
            headers=headers,
        )
        readings = tight_client.get(
            "/v1/sensors/air-d01-1/readings",
            params={"quantity": "pm25", "resolution": "raw"},
            headers=headers,
        )
        holder.rollback()
    for response, setting in [
        (kpi, "URBANPULSE_API_STATEMENT_TIMEOUT_KPIS"),
        (readings, "URBANPULSE_API_STATEMENT_TIMEOUT_READINGS"),
    ]:
        assert response.status_code == 504, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["limit"] == {"setting": setting, "seconds": 0.3}
        assert "statement timeout of 0.3 s" in body["detail"]
        assert "narrow the range" in body["detail"]
    # Released, the same question is answered.
    again = tight_client.get(
        "/v1/kpis/AIR-1/values",
        params=day_off_the_hour,
        headers=headers,
    )
    assert again.status_code == 200, again.text
