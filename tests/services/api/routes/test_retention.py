"""/v1/retention and /v1/erasures over real HTTP, in both storage modes: roles, refusals naming
the field, an erasure's effect on the rollups and its audit row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.kinds import QUANTITIES
from services.storage import rollups
from services.storage.writer import ReadingWriter
from tests.services.api.conftest import auth

Db = psycopg.Connection[tuple[object, ...]]

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


def _fields(response: Any) -> list[str]:
    return [e["field"] for e in _problem(response, 422)["errors"]]


def test_policies_are_read_by_engineers_and_changed_by_admins(
    api_client: TestClient, api_keys: dict[str, str]
) -> None:
    admin, engineer = auth(api_keys["admin"]), auth(api_keys["engineer"])
    listed = api_client.get("/v1/retention", headers=engineer)
    assert listed.status_code == 200, listed.text
    assert [(p["scope"], p["raw_days"]) for p in listed.json()] == [("default", 400)]
    assert api_client.get("/v1/retention", headers=auth(api_keys["operator"])).status_code == 403

    body = {"raw_days": 30, "rollup_1m_years": 1, "rollup_1h_years": 5}
    assert (
        api_client.put("/v1/retention/domain/traffic", json=body, headers=engineer).status_code
        == 403
    )
    put = api_client.put("/v1/retention/domain/traffic", json=body, headers=admin)
    assert put.status_code == 200, put.text
    assert put.json() | {"updated_at": None} == {
        "scope": "domain",
        "name": "traffic",
        "raw_days": 30,
        "rollup_1m_years": 1,
        "rollup_1h_years": 5,
        "rollup_1d_years": None,
        "updated_by": "key:test admin (" + api_keys["admin"].split(".")[0] + ")",
        "updated_at": None,
    }
    put = api_client.put("/v1/retention/default", json={"raw_days": 200}, headers=admin)
    assert put.status_code == 200, put.text
    names = [
        (p["scope"], p["name"], p["raw_days"])
        for p in api_client.get("/v1/retention", headers=engineer).json()
    ]
    assert names == [("default", "", 200), ("domain", "traffic", 30)]

    assert api_client.delete("/v1/retention/domain/traffic", headers=admin).status_code == 204
    gone = api_client.delete("/v1/retention/domain/traffic", headers=admin)
    assert _problem(gone, 404)["detail"] == "no retention policy for domain 'traffic'"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/retention/domain/sewage", {"raw_days": 30}, "path.name"),
        ("/v1/retention/kind/teapot", {"raw_days": 30}, "path.name"),
        ("/v1/retention/quantity/mood", {"raw_days": 30}, "path.name"),
        ("/v1/retention/planet/earth", {"raw_days": 30}, "path.scope"),
        ("/v1/retention/default", {"raw_days": -3}, "body.raw_days"),
        ("/v1/retention/default", {"raw_days": 0}, "body.raw_days"),
        ("/v1/retention/default", {"raw_days": 400, "rollup_1m_years": 1}, "body.rollup_1m_years"),
        (
            "/v1/retention/kind/air_quality",
            {"raw_days": 30, "rollup_1m_years": 5, "rollup_1h_years": 2},
            "body.rollup_1h_years",
        ),
        ("/v1/retention/default", {"raw_days": 30, "keep": "forever"}, "body.keep"),
    ],
    ids=[
        "unknown-domain",
        "unknown-kind",
        "unknown-quantity",
        "unknown-scope",
        "negative-days",
        "zero-days",
        "rollups-shorter-than-raw",
        "hours-shorter-than-minutes",
        "unknown-member",
    ],
)
def test_bad_policies_are_refused_naming_the_field(
    api_client: TestClient, api_keys: dict[str, str], path: str, body: dict[str, Any], field: str
) -> None:
    response = api_client.put(path, json=body, headers=auth(api_keys["admin"]))
    assert field in _fields(response)


def _sensor_with_a_day(api_db: Db) -> int:
    row = api_db.execute(
        "INSERT INTO sensors (id, kind, domain) VALUES ('em-1', 'electricity_meter', 'energy') "
        "RETURNING key"
    ).fetchone()
    assert row is not None
    key = int(str(row[0]))
    mode = str(
        api_db.execute("SELECT value FROM storage_settings WHERE name = 'mode'").fetchone()[0]
    )  # type: ignore[index]
    api_db.autocommit = False
    ReadingWriter(api_db, mode).write(
        [
            ((DAY + timedelta(hours=h)).timestamp(), key, QUANTITIES["energy"].key, float(h))
            for h in range(24)
        ]
    )
    api_db.commit()
    rollups.refresh(api_db, mode, now=datetime.now(UTC))
    api_db.autocommit = True
    return key


def test_an_admin_erases_and_the_audit_says_who_what_and_why(
    api_client: TestClient, api_keys: dict[str, str], api_db: Db
) -> None:
    admin = auth(api_keys["admin"])
    key = _sensor_with_a_day(api_db)
    body = {
        "sensor_id": "em-1",
        "start": (DAY + timedelta(hours=6)).isoformat(),
        "end": (DAY + timedelta(hours=18)).isoformat(),
        "reason": "meter installed at the wrong address",
        "rollups": "recompute",
    }
    engineer = api_client.post("/v1/erasures", json=body, headers=auth(api_keys["engineer"]))
    assert _problem(engineer, 403)["permission"] == "settings:write"

    done = api_client.post("/v1/erasures", json=body, headers=admin)
    assert done.status_code == 201, done.text
    # Hours 6 to 17 erased: 12 readings; 12 minutes, 12 hours and the day recomputed.
    assert (done.json()["rows_erased"], done.json()["buckets_recomputed"]) == (12, 25)
    day = api_db.execute(
        "SELECT count, sum FROM readings_1d WHERE sensor_key = %s", (key,)
    ).fetchone()
    assert day == (12, 138.0)  # 0+..+5 + 18+..+23

    kept = api_client.post(
        "/v1/erasures", json=body | {"rollups": "keep", "start": DAY.isoformat()}, headers=admin
    )
    # Hours 0 to 5 were left: 6 readings; the rollups keep them.
    assert (kept.status_code, kept.json()["rows_erased"]) == (201, 6)
    assert api_db.execute(
        "SELECT count, sum FROM readings_1d WHERE sensor_key = %s", (key,)
    ).fetchone() == (12, 138.0)

    audit = api_client.get("/v1/erasures", headers=admin)
    assert audit.status_code == 200, audit.text
    assert [(a["rollups"], a["rows_erased"], a["reason"]) for a in audit.json()] == [
        ("keep", 6, "meter installed at the wrong address"),
        ("recompute", 12, "meter installed at the wrong address"),
    ]
    assert {a["actor"] for a in audit.json()} == {
        "key:test admin (" + api_keys["admin"].split(".")[0] + ")"
    }
    assert api_client.get("/v1/erasures", headers=auth(api_keys["engineer"])).status_code == 403


def test_erasure_refusals(api_client: TestClient, api_keys: dict[str, str], api_db: Db) -> None:
    admin = auth(api_keys["admin"])
    _sensor_with_a_day(api_db)
    base = {
        "sensor_id": "em-1",
        "start": DAY.isoformat(),
        "end": (DAY + timedelta(days=1)).isoformat(),
        "reason": "test",
    }
    missing = api_client.post("/v1/erasures", json=base | {"sensor_id": "nope"}, headers=admin)
    assert _problem(missing, 404)["detail"] == "no sensor 'nope' in the registry"
    backwards = base | {"end": (DAY - timedelta(days=1)).isoformat()}
    assert _fields(api_client.post("/v1/erasures", json=backwards, headers=admin)) == ["body.end"]
    too_long = base | {"start": (DAY - timedelta(days=500)).isoformat()}
    assert _fields(api_client.post("/v1/erasures", json=too_long, headers=admin)) == ["body.end"]
    blank = base | {"reason": "  "}
    assert _fields(api_client.post("/v1/erasures", json=blank, headers=admin)) == ["body.reason"]
    wrong = base | {"rollups": "drop"}
    assert _fields(api_client.post("/v1/erasures", json=wrong, headers=admin)) == ["body.rollups"]
    # None of them was carried out, so none is in the audit; an empty range is.
    empty = base | {
        "start": (DAY - timedelta(days=5)).isoformat(),
        "end": (DAY - timedelta(days=4)).isoformat(),
    }
    done = api_client.post("/v1/erasures", json=empty, headers=admin)
    assert (done.status_code, done.json()["rows_erased"]) == (201, 0)
    assert len(api_client.get("/v1/erasures", headers=admin).json()) == 1
