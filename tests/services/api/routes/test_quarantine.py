"""Quarantine routes: filters, newest-first cursor walk, payload preview, summary by reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.api.routes.quarantine import PREVIEW_BYTES
from services.cli import app as cli
from tests.services.api.conftest import auth

Db = psycopg.Connection[tuple[object, ...]]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def entries(api_db: Db) -> None:
    rows = [
        (T0 + timedelta(minutes=i), f"ssc/v1/gw{i % 2}/up", f"gw{i % 2}", f"s{i % 3}", reason, body)
        for i, (reason, body) in enumerate(
            [("unknown_sensor", b'[{"n":"s0"}]')] * 5
            + [("out_of_bounds", b"\xff\xfe binary")] * 3
            + [("not_senml", b"x" * 5000)] * 2
        )
    ]
    with api_db.cursor() as cur:
        for received_at, topic, gateway, sensor, reason, body in rows:
            cur.execute(
                "WITH m AS (INSERT INTO quarantine_messages (received_at, topic, bytes, payload) "
                "VALUES (%s, %s, %s, %s) RETURNING id) "
                "INSERT INTO quarantine (message_id, received_at, topic, gateway_id, sensor_id, "
                "reason) SELECT id, %s, %s, %s, %s, %s FROM m",
                (received_at, topic, len(body), body, received_at, topic, gateway, sensor, reason),
            )


@pytest.fixture
def operator(api_client: TestClient, api_keys: dict[str, str]) -> TestClient:
    api_client.headers.update(auth(api_keys["operator"]))
    return api_client


@pytest.mark.usefixtures("entries")
def test_walk_newest_first_each_entry_once(operator: TestClient) -> None:
    seen: list[int] = []
    params: dict[str, object] = {"limit": 3}
    while True:
        page = operator.get("/v1/quarantine", params=params).json()
        seen.extend(e["id"] for e in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == 10
    assert seen == sorted(seen, reverse=True)


@pytest.mark.usefixtures("entries")
def test_filters_and_preview(operator: TestClient) -> None:
    def get(**params: object) -> list[dict[str, object]]:
        response = operator.get("/v1/quarantine", params=params)
        assert response.status_code == 200, response.text
        items: list[dict[str, object]] = response.json()["items"]
        return items

    assert len(get(reason="out_of_bounds")) == 3
    assert {e["gateway_id"] for e in get(gateway="gw1")} == {"gw1"}
    assert {e["sensor_id"] for e in get(sensor="s2")} == {"s2"}
    assert len(get(since=(T0 + timedelta(minutes=8)).isoformat())) == 2
    [big, *_] = get(reason="not_senml")
    assert big["payload_bytes"] == 5000
    assert big["payload_preview"] == "x" * PREVIEW_BYTES
    [binary, *_] = get(reason="out_of_bounds")
    assert binary["payload_preview"] == "\ufffd\ufffd binary"


@pytest.mark.usefixtures("entries")
def test_summary(operator: TestClient) -> None:
    body = operator.get("/v1/quarantine/summary").json()
    assert body["total"] == 10
    assert body["reasons"] == [
        {"reason": "unknown_sensor", "count": 5},
        {"reason": "out_of_bounds", "count": 3},
        {"reason": "not_senml", "count": 2},
    ]
    later = operator.get(
        "/v1/quarantine/summary", params={"since": (T0 + timedelta(minutes=5)).isoformat()}
    ).json()
    assert later["reasons"] == [
        {"reason": "out_of_bounds", "count": 3},
        {"reason": "not_senml", "count": 2},
    ]


def test_bad_parameters(operator: TestClient) -> None:
    for query, field in (("since=soon", "query.since"), ("cursor=WyJhIl0", "query.cursor")):
        response = operator.get(f"/v1/quarantine?{query}")
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.usefixtures("entries")
@pytest.mark.parametrize(
    ("role", "status"),
    [("operator", 200), ("engineer", 200), ("admin", 200), ("service", 403)],
)
def test_only_people_who_act_on_it_read_the_payloads(
    api_client: TestClient, api_keys: dict[str, str], role: str, status: int
) -> None:
    """Issue 11: a service key (a dashboard, an exporter) read every gateway's raw payloads."""
    listed = api_client.get("/v1/quarantine", headers=auth(api_keys[role]))
    assert listed.status_code == status, listed.text
    if status == 403:
        assert listed.headers["content-type"] == "application/problem+json"
        assert listed.json()["role"] == "service"
        assert "items" not in listed.json()
    # How many entries per reason holds no payload: every reader sees it.
    summary = api_client.get("/v1/quarantine/summary", headers=auth(api_keys[role]))
    assert summary.status_code == 200


def _cli_counts(database_url: str, *options: str) -> tuple[int, dict[str, int]]:
    """The total and the counts by reason that ``urbanpulse quarantine list`` prints last."""
    result = CliRunner().invoke(
        cli, ["quarantine", "list", "--limit", "1", "--database-url", database_url, *options]
    )
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    total, _, by_reason = last.partition(": ")
    counts = {}
    for part in by_reason.split(", "):
        reason, _, count = part.rpartition(" ")
        counts[reason] = int(count)
    return int(total.split()[0]), counts


@pytest.mark.usefixtures("entries")
def test_cli_and_api_count_the_same_entries(
    operator: TestClient, api_db: Db, database_url: str
) -> None:
    """Issue 12: the CLI hid replayed entries and the API counted them. One rule now (an entry
    counts until it is replayed; --all / include_replayed=true counts those too), one query."""
    api_db.execute(
        "UPDATE quarantine SET replayed_at = now() WHERE id IN (SELECT id FROM quarantine "
        "WHERE reason = 'unknown_sensor' ORDER BY id LIMIT 2)"
    )
    for options, params, total in (((), {}, 8), (("--all",), {"include_replayed": "true"}, 10)):
        body = operator.get("/v1/quarantine/summary", params=params).json()
        api = {r["reason"]: r["count"] for r in body["reasons"]}
        assert _cli_counts(database_url, *options) == (body["total"], api)
        assert body["total"] == total
    waiting = operator.get("/v1/quarantine/summary").json()["reasons"]
    assert {"reason": "unknown_sensor", "count": 3} in waiting


@pytest.mark.usefixtures("entries")
def test_the_list_hides_replayed_entries_as_the_summary_does(
    operator: TestClient, api_db: Db
) -> None:
    """Issue 12: GET /v1/quarantine still listed replayed entries that the summary no longer
    counted. Both choose by one filter now: waiting entries, or with include_replayed all."""
    replayed = {
        int(row[0])  # type: ignore[call-overload]
        for row in api_db.execute(
            "UPDATE quarantine SET replayed_at = now() WHERE id IN (SELECT id FROM quarantine "
            "WHERE reason = 'out_of_bounds' ORDER BY id LIMIT 2) RETURNING id"
        ).fetchall()
    }
    api_db.commit()
    for params, total in (({}, 8), ({"include_replayed": "true"}, 10)):
        listed: list[dict[str, object]] = []
        query: dict[str, object] = {**params, "limit": 3}
        while True:  # every page, so the count is the list's, not one page's
            page = operator.get("/v1/quarantine", params=query).json()
            listed.extend(page["items"])
            if page["next_cursor"] is None:
                break
            query["cursor"] = page["next_cursor"]
        summary = operator.get("/v1/quarantine/summary", params=params).json()
        by_reason: dict[str, int] = {}
        for entry in listed:
            by_reason[str(entry["reason"])] = by_reason.get(str(entry["reason"]), 0) + 1
        assert len(listed) == summary["total"] == total
        assert by_reason == {r["reason"]: r["count"] for r in summary["reasons"]}
        shown = {e["id"] for e in listed if e["replayed_at"] is not None}
        assert shown == (replayed if params else set())
    one_reason = operator.get("/v1/quarantine", params={"reason": "out_of_bounds"}).json()
    assert [e["replayed_at"] for e in one_reason["items"]] == [None]
