"""The API's reads on a real streaming standby (``URBANPULSE_DATABASE_READ_URL``): read-only
routes answer from it, writes go to the primary, and a standby that lags past
``URBANPULSE_DATABASE_READ_MAX_LAG`` or is down sends reads back to the primary while
``/readyz`` says ``degraded``.

That the replica answered is proved by pausing its replay (``pg_wal_replay_pause``): a row the
primary has is then missing from the API's answer until replay resumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.kinds import QUANTITIES
from services.api.app import create_app
from services.api.keys import create_key
from services.settings import Settings
from services.storage.modes import storage_mode
from services.storage.writer import ReadingWriter
from tests.deploy.waiting import wait_for
from tests.fixtures.broker import BrokerUnderTest
from tests.fixtures.replica import Pair, streaming_pair
from tests.services.api.conftest import auth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """One standby for the module: each test leaves it streaming and replaying."""
    with streaming_pair() as made:
        yield made


@pytest.fixture(scope="module")
def key(pair: Pair) -> str:
    with psycopg.connect(pair.primary_url) as conn:
        _, secret = create_key(conn, "replica test", "engineer")
    return secret


def _client(pair: Pair, broker: BrokerUnderTest, key: str, max_lag: timedelta) -> TestClient:
    settings = Settings(  # type: ignore[call-arg]
        database_url=pair.primary_url,
        database_read_url=pair.standby_url,
        database_read_max_lag=max_lag,
        mqtt_url=broker.url,
        _env_file=None,
    )
    client = TestClient(create_app(settings))
    client.headers.update(auth(key))
    return client


@pytest.fixture
def paused(pair: Pair) -> Iterator[None]:
    """The standby keeps receiving WAL but stops replaying it."""
    with psycopg.connect(pair.standby_url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        with psycopg.connect(pair.standby_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")


def _ready(client: TestClient) -> dict[str, object]:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _replica_check(client: TestClient) -> dict[str, object]:
    checks = _ready(client)["checks"]
    assert isinstance(checks, dict)
    check: dict[str, object] = checks["replica"]
    return check


def _status(client: TestClient, path: str) -> int:
    return client.get(path).status_code


def _on_replica(client: TestClient) -> None:
    wait_for(lambda: _replica_check(client)["ok"] is True, "reads on the replica", timeout=30)


def _add_district(client: TestClient, district: str) -> None:
    response = client.post("/v1/districts", json={"id": district, "name": district})
    assert response.status_code == 201, response.text


def _points(client: TestClient, start: datetime, end: datetime) -> int:
    response = client.get(
        "/v1/sensors/r-1/readings", params={"start": start.isoformat(), "end": end.isoformat()}
    )
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    assert isinstance(points, list)
    return len(points)


def test_reads_come_from_the_replica_and_writes_from_the_primary(
    pair: Pair, mqtt_broker: BrokerUnderTest, key: str
) -> None:
    with _client(pair, mqtt_broker, key, timedelta(hours=1)) as client:
        _on_replica(client)
        _add_district(client, "r01")  # answered 201: the write went to the primary
        wait_for(lambda: _status(client, "/v1/districts/r01") == 200, "r01 replayed", timeout=30)
        with psycopg.connect(pair.primary_url) as conn:
            row = conn.execute(
                "INSERT INTO sensors (id, kind, domain, interval_s) "
                "VALUES ('r-1', 'noise', 'environment', 60) RETURNING key"
            ).fetchone()
        assert row is not None
        wait_for(lambda: _status(client, "/v1/sensors/r-1") == 200, "r-1 replayed", timeout=30)

        with psycopg.connect(pair.standby_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        try:
            _add_district(client, "r02")
            now = datetime.now(UTC)
            with psycopg.connect(pair.primary_url) as conn:
                reading = (now - timedelta(minutes=5)).timestamp(), row[0], QUANTITIES["laeq"].key
                ReadingWriter(conn, storage_mode(conn)).write([(*reading, 1.0)])
            # The primary has them; the API's answers do not: they came from the standby.
            with psycopg.connect(pair.primary_url) as conn:
                assert conn.execute("SELECT 1 FROM districts WHERE id = 'r02'").fetchone()
            assert _status(client, "/v1/districts/r02") == 404
            ids = {d["id"] for d in client.get("/v1/districts").json()["items"]}
            assert "r01" in ids
            assert "r02" not in ids
            start, end = now - timedelta(hours=1), now
            assert _points(client, start, end) == 0
            # Every route switched to the replica answers there: none of them writes.
            kpi = client.get("/v1/kpis").json()[0]["id"]
            for path in (
                "/v1/alerts",
                "/v1/alert-rules",
                "/v1/quarantine",
                "/v1/quarantine/summary",
                "/v1/settings",
                "/v1/gateways",
                "/v1/sensors",
                f"/v1/kpis/{kpi}/values?period=day",
                f"/v1/kpis/{kpi}/baseline",
                "/v1/kpis/current",
            ):
                assert _status(client, path) == 200, path
            # Within the maximum lag, the replica is reported and still used.
            check = _replica_check(client)
            assert check["ok"] is True
            assert "reads on the replica" in str(check["detail"])
            assert _ready(client)["status"] == "ready"
        finally:
            with psycopg.connect(pair.standby_url, autocommit=True) as conn:
                conn.execute("SELECT pg_wal_replay_resume()")
        wait_for(lambda: _status(client, "/v1/districts/r02") == 200, "r02 replayed", timeout=30)
        wait_for(lambda: _points(client, start, end) == 1, "the reading replayed", timeout=30)


@pytest.mark.usefixtures("paused")
def test_a_lagging_replica_sends_reads_to_the_primary(
    pair: Pair, mqtt_broker: BrokerUnderTest, key: str
) -> None:
    with _client(pair, mqtt_broker, key, timedelta(milliseconds=500)) as client:
        _add_district(client, "r03")
        # Replay is paused: only the primary has r03, so seeing it proves the fallback.
        wait_for(lambda: _status(client, "/v1/districts/r03") == 200, "reads on the primary")
        body = _ready(client)
        assert body["status"] == "degraded"
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert {name for name, check in checks.items() if not check["ok"]} == {"replica"}
        check = _replica_check(client)
        assert check["ok"] is False
        assert "replay lag" in str(check["detail"])
        assert "reads on the primary" in str(check["detail"])
        # Without a key, the probe says only that it is degraded, not what it found.
        bare = client.get("/readyz", headers={"X-API-Key": ""}).json()
        assert bare["status"] == "degraded"
        assert bare["checks"]["replica"] == {"ok": False, "detail": None}


def test_a_stopped_replica_sends_reads_to_the_primary_until_it_is_back(
    pair: Pair, mqtt_broker: BrokerUnderTest, key: str
) -> None:
    with _client(pair, mqtt_broker, key, timedelta(hours=1)) as client:
        _on_replica(client)
        pair.standby.stop()
        try:
            _add_district(client, "r04")
            wait_for(
                lambda: _status(client, "/v1/districts/r04") == 200,
                "reads on the primary",
                timeout=30,
            )
            body = _ready(client)
            assert body["status"] == "degraded"
            assert "unreachable" in str(_replica_check(client)["detail"])
        finally:
            pair.standby.start()
        _on_replica(client)
        assert _ready(client)["status"] == "ready"
        assert _status(client, "/v1/districts/r04") == 200  # replayed on its return
