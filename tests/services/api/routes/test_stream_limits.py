"""What one live stream may cost (issue 11), over real HTTP to uvicorn and the real event log:
caps per key and per process, a stalled reader disconnected, a revoked key's stream ended,
resume points that are not event ids refused or reset, and the log read a bounded page at a time.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import httpx2 as httpx
import psycopg
import pytest

from services.api.keys import create_key, revoke_key
from services.settings import Settings
from services.storage import events
from services.storage.urls import libpq_url
from tests.services.api.conftest import auth
from tests.services.api.routes.test_stream import (
    Conn,
    _kpi_event,
    _register,
    _write,
    messages_of,
    serve,
)

MiB = 1024 * 1024


def _open(stack: ExitStack, url: str, key: str, **params: Any) -> httpx.Response:
    """A stream opened and left unread (its status and headers only)."""
    return stack.enter_context(
        httpx.stream(
            "GET", f"{url}/v1/stream", params=params, headers=auth(key), timeout=httpx.Timeout(10)
        )
    )


def _status_once_free(url: str, key: str, deadline_s: float) -> int:
    """The status of a new stream of ``key``, retried while it is 429 (a slot not yet freed)."""
    deadline = time.monotonic() + deadline_s
    while True:
        with httpx.stream("GET", f"{url}/v1/stream", headers=auth(key), timeout=10) as response:
            if response.status_code != 429 or time.monotonic() > deadline:
                return response.status_code
        time.sleep(0.2)


def test_streams_are_capped_per_key_and_per_process(
    api_settings: Settings, api_keys: dict[str, str]
) -> None:
    settings = api_settings.model_copy(update={"api_stream_max_per_key": 1, "api_stream_max": 2})
    operator, service, engineer = api_keys["operator"], api_keys["service"], api_keys["engineer"]
    with serve(settings) as url:
        with ExitStack() as stack:
            assert _open(stack, url, operator).status_code == 200
            per_key = _open(stack, url, operator)
            assert per_key.status_code == 429
            assert per_key.headers["content-type"] == "application/problem+json"
            assert int(per_key.headers["Retry-After"]) > 0
            assert "URBANPULSE_API_STREAM_MAX_PER_KEY" in per_key.read().decode()
            assert _open(stack, url, service).status_code == 200
            per_process = _open(stack, url, engineer)
            assert per_process.status_code == 503
            assert "URBANPULSE_API_STREAM_MAX" in per_process.read().decode()
        # Closed streams give their slots back.
        assert _status_once_free(url, operator, 10) == 200


def test_a_reader_that_takes_nothing_is_disconnected(
    api_settings: Settings, api_keys: dict[str, str], api_db: Conn
) -> None:
    # A backlog far larger than the socket buffers between server and client can hold.
    pad = "x" * 100_000
    with api_db.transaction():
        for n in range(150):
            events.append(api_db, "kpi", {"kpi_id": "WAT-1", "n": n, "pad": pad})
    settings = api_settings.model_copy(
        update={"api_stream_stall_timeout": timedelta(seconds=1), "api_stream_max_per_key": 1}
    )
    key = api_keys["service"]
    with serve(settings) as url, ExitStack() as stack:
        stalled = _open(stack, url, key, after=0)
        assert stalled.status_code == 200
        # While the stalled stream is open, it holds the key's only slot; the server closing it
        # frees the slot.
        assert _open(stack, url, key).status_code == 429
        assert _status_once_free(url, key, 15) == 200
        # What the stalled reader finds when it reads at last: what the sockets held, then the
        # end (not the whole backlog, and not a stream waiting for more).
        chunks: list[int] = []
        with pytest.raises(httpx.RemoteProtocolError):
            chunks.extend(len(chunk) for chunk in stalled.iter_raw())
        assert 0 < sum(chunks) < 15_000_000


def test_a_revoked_keys_stream_ends(api_settings: Settings, database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        key_id, key = create_key(conn, "soon revoked", "service")
        conn.commit()
    settings = api_settings.model_copy(
        update={"api_stream_key_recheck": timedelta(milliseconds=300)}
    )
    ended = threading.Event()
    with serve(settings) as url:

        def read_to_the_end() -> None:
            # A read timeout (10 s, less than the 15 s keep-alive) fails the thread, unset.
            with httpx.stream("GET", f"{url}/v1/stream", headers=auth(key), timeout=10) as r:
                assert r.status_code == 200
                for _ in r.iter_lines():
                    pass
            ended.set()

        reader = threading.Thread(target=read_to_the_end)
        reader.start()
        time.sleep(1)  # the stream is open and past a re-check or two
        assert not ended.is_set()
        with psycopg.connect(libpq_url(database_url)) as conn:
            revoke_key(conn, key_id)
            conn.commit()
        reader.join(12)
    assert ended.is_set()


def test_resume_points_that_are_not_event_ids_are_refused(
    api_settings: Settings, api_keys: dict[str, str]
) -> None:
    key = auth(api_keys["operator"])
    with serve(api_settings) as url:
        # A superscript two passes str.isdigit() but not int(): a header is Latin-1 on the wire.
        for given in (b"9" * 5000, b"1" * 20, "²".encode("latin-1")):
            response = httpx.get(f"{url}/v1/stream", headers={**key, "Last-Event-ID": given})
            assert response.status_code == 422, (given[:30], response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"][0]["field"] == "header.last-event-id"
        for after in ("9" * 5000, "1" * 20):
            response = httpx.get(f"{url}/v1/stream", params={"after": after}, headers=key)
            assert response.status_code == 422, (after[:30], response.text)
            assert response.json()["errors"][0]["field"] == "query.after"


def test_a_resume_point_past_the_newest_event_gets_a_reset(
    api_settings: Settings, api_keys: dict[str, str], api_db: Conn
) -> None:
    newest = _kpi_event(api_db, "d01", 1.0)
    past = newest + 10**15  # a bigint, but no id the log handed out
    with serve(api_settings) as url, ExitStack() as stack:
        stream = messages_of(_open(stack, url, api_keys["operator"], after=past))
        reset = next(stream)
        assert reset.event == "reset"
        assert (reset.data["last_event_id"], reset.data["resumes_after"]) == (past, newest)
        # Then the stream follows the log from there.
        later = _kpi_event(api_db, "d01", 2.0)
        event = next(stream)
    assert (event.id, event.data["value"]) == (str(later), 2.0)


def test_the_log_is_read_a_bounded_page_of_readings_at_a_time(
    api_db: Conn, database_url: str
) -> None:
    keys = _register(api_db)
    first = events.last_id(api_db)
    at = float(int(time.time()) - 3600)
    for batch, size in enumerate((3, 3, 3)):
        _write(
            database_url,
            [(at + 60 * (batch * 10 + i), keys["wat-dma-d01-1"], 1, 1.0) for i in range(size)],
        )
    kpi = _kpi_event(api_db, "d01", 1.0)

    def page(after: int, max_readings: int) -> list[int]:
        read = events.read_after(api_db, after, max_readings=max_readings)
        return [len(e.readings or ()) for e in read]

    assert page(first, 100) == [3, 3, 3, 0]
    assert page(first, 6) == [3, 3]
    # The first event always comes, however many readings it holds: a reader moves on.
    assert page(first, 2) == [3]
    last_readings = events.read_after(api_db, first, max_readings=100)[2].id
    assert [e.id for e in events.read_after(api_db, last_readings, max_readings=1)] == [kpi]
