"""/v1/alerts and /v1/alert-rules over HTTP: listing and filters, the lifecycle (acknowledge,
clear, refusals), who is recorded, events for the live stream, and role checks. Raising and
clearing by the rules themselves is tested in tests/services/kpi/alerts/."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.kpi.alerts.defaults import DEFAULT_RULES, install_defaults
from services.storage import events

Conn = psycopg.Connection[tuple[object, ...]]


def _raise(db: Conn, rule_id: str, subject: str, district: str, domain: str) -> int:
    """An open alert, as the evaluator would have raised it."""
    row = db.execute(
        "INSERT INTO alerts (rule_id, subject_id, district_id, domain, severity, message, value) "
        "VALUES (%s, %s, %s, %s, 'warning', 'test alert', 1.0) RETURNING id",
        (rule_id, subject, district, domain),
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[arg-type]


@pytest.fixture
def alerts(api_db: Conn) -> dict[str, int]:
    install_defaults(api_db)
    api_db.execute("INSERT INTO districts (id, name) VALUES ('d01', 'North'), ('d02', 'South')")
    return {
        "pressure": _raise(api_db, "water-low-pressure", "wat-prs-1", "d01", "water"),
        "fire": _raise(api_db, "waste-fire", "wst-1", "d02", "waste"),
    }


def test_list_filter_and_get(
    alerts: dict[str, int], api_client: TestClient, api_keys: dict[str, str]
) -> None:
    headers = {"X-API-Key": api_keys["service"]}
    listed = api_client.get("/v1/alerts", headers=headers).json()
    assert [a["id"] for a in listed["items"]] == [alerts["fire"], alerts["pressure"]]
    water = api_client.get("/v1/alerts", params={"domain": "water"}, headers=headers).json()
    assert [a["id"] for a in water["items"]] == [alerts["pressure"]]
    page = api_client.get("/v1/alerts", params={"limit": 1}, headers=headers).json()
    rest = api_client.get(
        "/v1/alerts", params={"cursor": page["next_cursor"]}, headers=headers
    ).json()
    assert [a["id"] for a in page["items"] + rest["items"]] == [alerts["fire"], alerts["pressure"]]
    # The largest page size works too (the engine's own bound is the same 1000).
    widest = api_client.get("/v1/alerts", params={"limit": 1000}, headers=headers)
    assert widest.status_code == 200, widest.text
    assert len(widest.json()["items"]) == 2
    one = api_client.get(f"/v1/alerts/{alerts['fire']}", headers=headers).json()
    assert (one["rule_id"], one["state"]) == ("waste-fire", "raised")


def test_acknowledge_then_clear_records_who_and_why(
    alerts: dict[str, int], api_client: TestClient, api_keys: dict[str, str], api_db: Conn
) -> None:
    headers = {"X-API-Key": api_keys["operator"]}
    alert_id = alerts["pressure"]
    acked = api_client.post(
        f"/v1/alerts/{alert_id}/acknowledge", json={"comment": "crew sent"}, headers=headers
    )
    assert acked.status_code == 200, acked.text
    body = acked.json()
    assert (body["state"], body["ack_comment"]) == ("acknowledged", "crew sent")
    assert body["acknowledged_by"].startswith("test operator")
    again = api_client.post(f"/v1/alerts/{alert_id}/acknowledge", headers=headers)
    assert again.status_code == 409
    assert again.json()["state"] == "acknowledged"
    cleared = api_client.post(
        f"/v1/alerts/{alert_id}/clear", json={"comment": "valve fixed"}, headers=headers
    ).json()
    assert (cleared["state"], cleared["clear_comment"]) == ("cleared", "valve fixed")
    assert api_client.post(f"/v1/alerts/{alert_id}/clear", headers=headers).status_code == 409
    logged = [e.data["state"] for e in events.read_after(api_db, 0, types=["alert"])]
    assert logged == ["acknowledged", "cleared"]


def test_refusals(alerts: dict[str, int], api_client: TestClient, api_keys: dict[str, str]) -> None:
    service = {"X-API-Key": api_keys["service"]}
    refused = api_client.post(f"/v1/alerts/{alerts['fire']}/acknowledge", headers=service)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    operator = {"X-API-Key": api_keys["operator"]}
    assert api_client.post("/v1/alerts/999999/acknowledge", headers=operator).status_code == 404
    assert api_client.get("/v1/alerts/0", headers=operator).status_code == 422
    bad_state = api_client.get("/v1/alerts", params={"state": "sleeping"}, headers=operator)
    assert bad_state.status_code == 422
    assert bad_state.json()["errors"][0]["field"] == "query.state"
    too_long = api_client.post(
        f"/v1/alerts/{alerts['fire']}/clear", json={"comment": "x" * 5000}, headers=operator
    )
    assert too_long.status_code == 422


def test_rules_are_listed(
    alerts: dict[str, int], api_client: TestClient, api_keys: dict[str, str]
) -> None:
    headers = {"X-API-Key": api_keys["operator"]}
    rules = api_client.get("/v1/alert-rules", headers=headers).json()
    assert {r["id"] for r in rules} == {r.id for r in DEFAULT_RULES}
    leak = api_client.get("/v1/alert-rules/water-leak-night-flow", headers=headers).json()
    assert leak["condition"] == "night_flow"
    assert api_client.get("/v1/alert-rules/nope", headers=headers).status_code == 404


def test_who_acted_is_the_keys_name_and_no_reader_sees_a_key_id(
    alerts: dict[str, int], api_client: TestClient, api_keys: dict[str, str], api_db: Conn
) -> None:
    """A key id is half of a credential (issue 11): every reader of alerts saw the operator's."""
    operator = {"X-API-Key": api_keys["operator"]}
    key_id = api_keys["operator"].partition(".")[0]
    api_client.post(f"/v1/alerts/{alerts['pressure']}/acknowledge", headers=operator)
    api_client.post(f"/v1/alerts/{alerts['fire']}/clear", headers=operator)
    reader = {"X-API-Key": api_keys["service"]}
    acked = api_client.get(f"/v1/alerts/{alerts['pressure']}", headers=reader).json()
    cleared = api_client.get(f"/v1/alerts/{alerts['fire']}", headers=reader).json()
    assert (acked["acknowledged_by"], cleared["cleared_by"]) == ("test operator", "test operator")
    listed = api_client.get("/v1/alerts", headers=reader).text
    streamed = [e.data for e in events.read_after(api_db, 0, types=["alert"])]
    assert len(streamed) == 2
    for seen in (listed, str(streamed)):
        assert key_id not in seen
