"""The live stream's event log: commit order, resume points, pruning, and the writer's events."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from services.storage import events
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter

Conn = psycopg.Connection[tuple[object, ...]]


def _mode(db: Conn) -> str:
    return str(db.execute("SELECT value FROM storage_settings WHERE name = 'mode'").fetchone()[0])  # type: ignore[index]


def _sensor(db: Conn, sensor_id: str) -> int:
    key = db.execute(
        "INSERT INTO sensors (id, kind, domain) VALUES (%s, 'water_inflow', 'water') RETURNING key",
        (sensor_id,),
    ).fetchone()[0]  # type: ignore[index]
    db.commit()
    return int(key)  # type: ignore[arg-type]


def test_append_and_read_after_in_id_order(db: Conn) -> None:
    first = events.append(db, "kpi", {"kpi_id": "WAT-1"}, district_id="d01", domain="water")
    second = events.append(db, "alert", {"id": 1}, sensor_id="wat-dma-1")
    db.commit()
    read = events.read_after(db, 0)
    assert [(e.id, e.type, e.district_id, e.sensor_id) for e in read] == [
        (first, "kpi", "d01", None),
        (second, "alert", None, "wat-dma-1"),
    ]
    assert [e.id for e in events.read_after(db, first)] == [second]
    assert events.read_after(db, 0, types=["alert"])[0].id == second
    assert events.last_id(db) == second


def test_an_unknown_event_type_is_refused(db: Conn) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        events.append(db, "weather", {})


def test_ids_follow_commit_order_so_resuming_after_the_last_id_misses_nothing(
    database_url: str,
) -> None:
    """A transaction that took an id first but commits last must not be skipped by a reader."""
    url = libpq_url(database_url)
    with (
        psycopg.connect(url) as slow,
        psycopg.connect(url) as fast,
        psycopg.connect(url, autocommit=True) as reader,
    ):
        events.append(slow, "kpi", {"n": "slow"})  # holds the events lock, not committed
        done = threading.Event()

        def append_fast() -> None:
            events.append(fast, "kpi", {"n": "fast"})
            fast.commit()
            done.set()

        thread = threading.Thread(target=append_fast)
        thread.start()
        # The fast writer waits for the slow one's commit rather than taking a later id that
        # becomes visible first.
        assert not done.wait(0.5)
        assert events.read_after(reader, 0) == []
        slow.commit()
        assert done.wait(5)
        thread.join()
        seen = [e.data["n"] for e in events.read_after(reader, 0)]
    assert seen == ["slow", "fast"]


def test_prune_drops_only_events_past_retention(db: Conn) -> None:
    events.append(db, "kpi", {"n": 1})
    db.execute("UPDATE events SET time = now() - interval '2 hours'")
    events.append(db, "kpi", {"n": 2})
    db.commit()
    assert events.prune(db, timedelta(hours=1)) == 1
    db.commit()
    assert [e.data for e in events.read_after(db, 0)] == [{"n": 2}]


def test_the_writer_logs_each_batch_of_new_readings_once(db: Conn) -> None:
    sensor = _sensor(db, "wat-dma-0001")
    writer = ReadingWriter(db, _mode(db), live_events=True)
    start = float(int(time.time()) - 600)
    rows = [(start + i, sensor, 1, float(i)) for i in range(10)]
    assert writer.write(rows).inserted == 10
    db.commit()
    # A redelivery of half of it plus 5 new rows: only the new ones are news.
    result = writer.write(rows[5:] + [(start + 10 + i, sensor, 1, 10.0 + i) for i in range(5)])
    db.commit()
    assert (result.inserted, result.duplicates) == (5, 5)
    # All duplicates: no event at all.
    assert writer.write(rows).inserted == 0
    db.commit()
    logged = events.read_after(db, 0)
    assert [e.type for e in logged] == ["readings", "readings"]
    first, second = (sorted(e.readings or []) for e in logged)
    assert [(s, q, t.timestamp(), v) for s, q, t, v in first] == [
        (sensor, 1, start + i, float(i)) for i in range(10)
    ]
    assert [v for *_, v in second] == [10.0, 11.0, 12.0, 13.0, 14.0]


def test_the_writer_logs_nothing_unless_asked(db: Conn) -> None:
    sensor = _sensor(db, "wat-dma-0002")
    writer = ReadingWriter(db, _mode(db))
    writer.write([(float(int(time.time()) - 60), sensor, 1, 1.0)])
    db.commit()
    assert events.read_after(db, 0) == []
