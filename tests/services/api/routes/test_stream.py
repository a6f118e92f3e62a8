"""The live stream over a real HTTP connection: a uvicorn server in a thread, read with httpx.

Readings arrive through the real write path (ReadingWriter with live events), KPI and alert
events through the event log; the tests check filtering, resume with Last-Event-ID, the reset
message once the log was pruned past the resume point, and that only the streaming roles may
open it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import httpx2 as httpx
import psycopg
import pytest
import uvicorn

from services.api.app import create_app
from services.settings import Settings
from services.storage import events
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass
class Message:
    id: str | None
    event: str | None
    data: dict[str, object]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The API of ``settings`` served by uvicorn in a thread; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def api_url(api_settings: Settings) -> Iterator[str]:
    with serve(api_settings) as url:
        yield url


def messages_of(response: httpx.Response) -> Iterator[Message]:
    """The messages of an open stream, as they arrive (keep-alive comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if "data" in fields:
                yield Message(fields.get("id"), fields.get("event"), json.loads(fields["data"]))
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


def read_messages(
    url: str, key: str, count: int, params: dict[str, object] | None = None, **headers: str
) -> list[Message]:
    """The first ``count`` messages of the stream."""
    messages: list[Message] = []
    with httpx.stream(
        "GET",
        f"{url}/v1/stream",
        params=params,  # type: ignore[arg-type]
        headers={"X-API-Key": key, **headers},
        timeout=httpx.Timeout(10.0),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in messages_of(response):
            messages.append(message)
            if len(messages) == count:
                break
    return messages


def _register(db: Conn) -> dict[str, int]:
    db.execute("INSERT INTO districts (id, name) VALUES ('d01', 'North'), ('d02', 'South')")
    keys = {}
    for sensor_id, kind, domain, district in (
        ("wat-dma-d01-1", "water_inflow", "water", "d01"),
        ("air-d02-1", "air_quality", "environment", "d02"),
    ):
        row = db.execute(
            "INSERT INTO sensors (id, kind, domain, district_id) VALUES (%s, %s, %s, %s) "
            "RETURNING key",
            (sensor_id, kind, domain, district),
        ).fetchone()
        assert row is not None
        keys[sensor_id] = int(row[0])  # type: ignore[arg-type]
    return keys


def _write(url: str, rows: list[tuple[float, int, int, float]]) -> None:
    """Readings through the ingestion write path, live events on."""
    with psycopg.connect(libpq_url(url)) as conn:
        ReadingWriter(conn, storage_mode(conn), live_events=True).write(rows)
        conn.commit()


def _kpi_event(db: Conn, district: str, value: float) -> int:
    with db.transaction():
        return events.append(
            db,
            "kpi",
            {"kpi_id": "WAT-1", "scope": district, "value": value},
            district_id=district,
            domain="water",
        )


def test_new_readings_stream_filtered_by_district(
    api_url: str, api_keys: dict[str, str], api_db: Conn, database_url: str
) -> None:
    keys = _register(api_db)
    now = float(int(time.time()) - 60)
    received: list[Message] = []
    reader = threading.Thread(
        target=lambda: received.extend(
            read_messages(api_url, api_keys["service"], 1, {"district": "d01", "type": "readings"})
        )
    )
    reader.start()
    # A new subscriber starts after the newest event, and we cannot see when it has: write a
    # batch (one reading in each district) every half second until one reaches it.
    minute = 0
    while reader.is_alive() and minute < 30:
        at = now - 3600 + 60 * minute
        _write(
            database_url,
            [(at, keys["air-d02-1"], 15, 12.0), (at, keys["wat-dma-d01-1"], 1, float(minute))],
        )
        minute += 1
        reader.join(0.5)
    reader.join(15)
    assert len(received) == 1
    [message] = received
    assert message.event == "readings"
    # Only d01's reading of the batch (the d02 one is filtered out), as the stream shapes it.
    [reading] = message.data["readings"]  # type: ignore[misc]
    assert reading == {
        "sensor_id": "wat-dma-d01-1",
        "quantity": "flow",
        "unit": "m3/s",
        "time": reading["time"],
        "value": reading["value"],
        "district_id": "d01",
        "domain": "water",
    }
    written_at = datetime.fromisoformat(reading["time"]).timestamp()
    assert reading["value"] == (written_at - (now - 3600)) / 60  # the batch it came with


def test_resume_with_last_event_id_delivers_exactly_what_was_missed(
    api_url: str, api_keys: dict[str, str], api_db: Conn
) -> None:
    ids = [_kpi_event(api_db, "d01", float(n)) for n in range(5)]
    resumed = read_messages(api_url, api_keys["operator"], 3, **{"Last-Event-ID": str(ids[1])})
    assert [m.id for m in resumed] == [str(i) for i in ids[2:]]
    assert [m.data["value"] for m in resumed] == [2.0, 3.0, 4.0]
    # The query parameter does the same for clients that cannot set headers.
    again = read_messages(api_url, api_keys["operator"], 1, {"after": ids[3]})
    assert [m.id for m in again] == [str(ids[4])]


def test_kpi_and_alert_events_filtered_by_type_and_domain(
    api_url: str, api_keys: dict[str, str], api_db: Conn
) -> None:
    _kpi_event(api_db, "d01", 1.0)
    with api_db.transaction():
        alert = events.append(
            api_db, "alert", {"id": 7, "state": "raised"}, district_id="d02", domain="waste"
        )
    _kpi_event(api_db, "d02", 2.0)
    [only] = read_messages(api_url, api_keys["operator"], 1, {"type": "alert", "after": 0})
    assert (only.id, only.event, only.data["state"]) == (str(alert), "alert", "raised")
    water = read_messages(api_url, api_keys["operator"], 2, {"domain": "water", "after": 0})
    assert [m.data["value"] for m in water] == [1.0, 2.0]


def test_a_resume_point_older_than_the_log_gets_a_reset_first(
    api_url: str, api_keys: dict[str, str], api_db: Conn
) -> None:
    ids = [_kpi_event(api_db, "d01", float(n)) for n in range(4)]
    api_db.execute("DELETE FROM events WHERE id <= %s", (ids[1],))  # pruned by retention
    messages = read_messages(api_url, api_keys["operator"], 3, {"after": ids[0] - 1})
    assert messages[0].event == "reset"
    assert messages[0].data["resumes_after"] == ids[2] - 1
    assert [m.id for m in messages[1:]] == [str(ids[2]), str(ids[3])]


def test_the_stream_refuses_bad_parameters_and_roles_without_stream(
    api_url: str, api_keys: dict[str, str]
) -> None:
    bad_type = httpx.get(
        f"{api_url}/v1/stream", params={"type": "weather"}, headers={"X-API-Key": api_keys["admin"]}
    )
    assert bad_type.status_code == 422
    assert bad_type.headers["content-type"] == "application/problem+json"
    assert "weather" in bad_type.json()["detail"]
    bad_id = httpx.get(
        f"{api_url}/v1/stream", headers={"X-API-Key": api_keys["admin"], "Last-Event-ID": "x"}
    )
    assert bad_id.status_code == 422
    assert httpx.get(f"{api_url}/v1/stream").status_code == 401
