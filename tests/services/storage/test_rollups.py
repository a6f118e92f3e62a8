"""Rollups equal a direct aggregation of the raw rows, in both modes, late data included."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.storage import rollups
from services.storage.writer import ReadingWriter

Conn = psycopg.Connection[tuple[object, ...]]

WIDTHS = {"readings_1m": "1 minute", "readings_1h": "1 hour", "readings_1d": "1 day"}


def _direct(db: Conn, width: str, below: datetime | None) -> list[tuple[object, ...]]:
    """The rollup computed straight from ``readings`` (the oracle)."""
    return db.execute(
        "SELECT date_bin(%s::interval, time, '1970-01-01Z') AS bucket, sensor_key, quantity_key, "
        "count(*), sum(value), min(value), max(value), "
        "(array_agg(value ORDER BY time))[1], (array_agg(value ORDER BY time DESC))[1], "
        "min(time), max(time) FROM readings WHERE %s::timestamptz IS NULL OR time < %s "
        "GROUP BY 1, 2, 3 ORDER BY 2, 3, 1",
        (width, below, below),
    ).fetchall()


def _rollup(db: Conn, name: str) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT bucket, sensor_key, quantity_key, count, sum, min, max, first, last, first_time, "
        f"last_time FROM {name} ORDER BY 2, 3, 1"
    ).fetchall()


def _assert_equal(db: Conn, below: datetime | None) -> None:
    for name, width in WIDTHS.items():
        expected = _direct(db, width, below)
        actual = _rollup(db, name)
        assert len(actual) == len(expected), name
        for got, want in zip(actual, expected, strict=True):
            # Sums of doubles may differ in the last bits with the order of addition.
            assert got[:4] == want[:4], name
            assert got[5:] == want[5:], name
            assert got[4] == pytest.approx(want[4], rel=1e-12), name


def _setup(db: Conn) -> tuple[ReadingWriter, list[int], str]:
    keys = [
        int(
            db.execute(  # type: ignore[index,arg-type]
                "INSERT INTO sensors (id, kind, domain) VALUES (%s, 'feeder_meter', 'energy') "
                "RETURNING key",
                (f"ene-fdr-{i}",),
            ).fetchone()[0]
        )
        for i in range(3)
    ]
    db.commit()
    mode = str(db.execute("SELECT value FROM storage_settings WHERE name='mode'").fetchone()[0])  # type: ignore[index]
    return ReadingWriter(db, mode), keys, mode


def _random_rows(
    rng: random.Random, keys: list[int], start: float, end: float, count: int
) -> list[tuple[float, int, int, float]]:
    return [
        (
            round(rng.uniform(start, end), 3),
            rng.choice(keys),
            rng.choice((8, 10)),
            rng.uniform(-100, 100),
        )
        for _ in range(count)
    ]


def test_rollups_equal_a_direct_aggregation_with_late_data(db: Conn) -> None:
    rng = random.Random(8428)
    writer, keys, mode = _setup(db)
    now = time.time()
    writer.write(_random_rows(rng, keys, now - 2 * 86400, now - 60, 5000))
    db.commit()
    first = rollups.refresh(db, mode)
    _assert_equal(db, first.watermark)

    # Late data well below the watermark (a gateway replaying its outbox), duplicates of rows
    # already stored, and new data: the next refresh folds all of it in.
    late = _random_rows(rng, keys, now - 2 * 86400, now - 3 * 3600, 700)
    writer.write(late)
    writer.write(late[:100])
    writer.write(_random_rows(rng, keys, now - 60, now, 300))
    db.commit()
    second = rollups.refresh(db, mode)
    _assert_equal(db, second.watermark)


def test_partition_refresh_stops_at_the_current_minute_and_catches_up(
    make_database: object,
) -> None:
    db_url = make_database("partitioned")  # type: ignore[operator]
    with psycopg.connect(db_url) as db:
        writer, keys, mode = _setup(db)
        now = datetime(2026, 11, 24, 12, 30, 30, tzinfo=UTC)
        base = now.timestamp()
        writer.write([(base - 120, keys[0], 8, 1.0), (base - 20, keys[0], 8, 2.0)])
        db.commit()
        result = rollups.refresh(db, mode, now=now)
        assert result.watermark == datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
        # The reading of the running minute waits for the next refresh.
        assert db.execute("SELECT sum(count) FROM readings_1m").fetchone() == (1,)
        later = rollups.refresh(db, mode, now=now + timedelta(minutes=1))
        assert later.watermark == datetime(2026, 11, 24, 12, 31, tzinfo=UTC)
        assert db.execute("SELECT sum(count), sum(sum) FROM readings_1m").fetchone() == (2, 3.0)
        assert db.execute("SELECT count, sum, first, last FROM readings_1h").fetchone() == (
            2,
            3.0,
            1.0,
            2.0,
        )


def test_a_refresh_with_nothing_new_changes_nothing(make_database: object) -> None:
    db_url = make_database("partitioned")  # type: ignore[operator]
    with psycopg.connect(db_url) as db:
        writer, keys, mode = _setup(db)
        now = datetime.now(UTC)
        writer.write([(now.timestamp() - 600, keys[0], 8, 5.0)])
        db.commit()
        rollups.refresh(db, mode, now=now)
        before = _rollup(db, "readings_1h")
        again = rollups.refresh(db, mode, now=now)
        assert _rollup(db, "readings_1h") == before
        # Only the (empty) span since the last watermark is looked at.
        assert all(hi - lo <= timedelta(minutes=1) for lo, hi in again.ranges)


def test_align_widens_to_whole_buckets_and_merges() -> None:
    t = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    minute, hour = timedelta(minutes=1), timedelta(hours=1)
    assert rollups.align([(t + timedelta(seconds=10), t + timedelta(seconds=70))], minute) == [
        (t, t + 2 * minute)
    ]
    assert rollups.align([(t, t + minute), (t + 2 * minute, t + 3 * minute)], hour) == [
        (t, t + hour)
    ]
    assert rollups.align([(t, t + minute), (t + 3 * hour, t + 3 * hour + minute)], hour) == [
        (t, t + hour),
        (t + 3 * hour, t + 4 * hour),
    ]
    assert rollups.align([(t, t)], minute) == []
