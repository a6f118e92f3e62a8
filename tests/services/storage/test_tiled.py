"""rollups.tiled: any range, whatever its bounds, aggregates exactly as the raw readings do.

One sensor reads every 7 s over three days (a step that is no divisor of a minute, so minute,
hour and day buckets all start and end between readings) with values that rise and fall, so
min, max, first and last each sit somewhere different. For ranges cut on the day, the hour,
the minute, the second and the microsecond, the tiles' count, sum, min, max, first and last
(by time) equal the same aggregates over ``readings``; and the range's rows come from the
coarsest rollups (a whole day is one ``readings_1d`` row, not 1440 minutes). Bounds on whole
minutes read no raw readings at all, and a session TimeZone with daylight saving (timestamptz
+ '1 day' is 23 or 25 hours there) changes nothing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway.kinds import QUANTITIES
from services.storage import rollups
from services.storage.modes import storage_mode
from services.storage.writer import ReadingWriter
from tests.services.storage.plans import raw_scans

Db = psycopg.Connection[tuple[object, ...]]

DAY0 = (datetime.now(UTC) - timedelta(days=5)).replace(hour=0, minute=0, second=0, microsecond=0)
STEP = timedelta(seconds=7)


def _value(i: int) -> float:
    # A wave plus a slow drift: no two neighbouring buckets share their min, max, first or last.
    return round(50 + 40 * math.sin(i / 97.0) + i / 1000.0, 6)


def _seed(db: Db, sensor_id: str, day0s: list[datetime], now: datetime) -> int:
    """A sensor reading every 7 s for three days from each of ``day0s``, rolled up at ``now``."""
    row = db.execute(
        "INSERT INTO sensors (id, kind, domain, interval_s) "
        "VALUES (%s, 'air_quality', 'environment', 7) RETURNING key",
        (sensor_id,),
    ).fetchone()
    assert row is not None
    key = int(str(row[0]))
    pm25 = QUANTITIES["pm25"].key
    count = int(timedelta(days=3) / STEP)
    rows = [
        ((day0 + i * STEP).timestamp(), key, pm25, _value(i))
        for day0 in day0s
        for i in range(count)
    ]
    db.commit()
    mode = storage_mode(db)
    ReadingWriter(db, mode).write(rows)
    db.commit()
    rollups.refresh(db, mode, now=now)
    return key


@pytest.fixture
def sensor(db: Db) -> int:
    return _seed(db, "air-t-1", [DAY0], DAY0 + timedelta(days=3, minutes=1))


_AGGREGATES = """
SELECT sum(count)::bigint, sum(sum), min(min), max(max),
       (array_agg(first ORDER BY first_time))[1], (array_agg(last ORDER BY last_time DESC))[1],
       count(*)
FROM {source} AS r
"""

_RAW = """
SELECT count(*), sum(value), min(value), max(value),
       (array_agg(value ORDER BY time))[1], (array_agg(value ORDER BY time DESC))[1]
FROM readings
WHERE sensor_key = %(sensor)s AND quantity_key = %(quantity)s AND time >= %(lo)s AND time < %(hi)s
"""

H = timedelta(hours=1)
M = timedelta(minutes=1)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (DAY0, DAY0 + timedelta(days=3)),  # whole days only
        (DAY0 + 5 * H, DAY0 + timedelta(days=2, hours=7)),  # whole hours
        (DAY0 + 5 * H + 17 * M, DAY0 + timedelta(days=2, hours=7, minutes=43)),  # whole minutes
        (DAY0 + 5 * H + 17 * M + 30 * S, DAY0 + timedelta(days=2, hours=7, seconds=3)),
        (DAY0 + 23 * H + 59 * M + 59 * S, DAY0 + timedelta(days=1, seconds=1)),  # over midnight
        (DAY0 + 10 * H + 3 * S, DAY0 + 10 * H + 40 * S),  # inside one minute
        (DAY0 + 10 * H + 1 * M, DAY0 + 11 * H + 2 * M),  # an hour and two minutes, no whole day
        (DAY0 + timedelta(microseconds=1), DAY0 + timedelta(days=3, microseconds=-1)),
        (DAY0 - timedelta(days=1, minutes=3), DAY0 + timedelta(days=4, seconds=9)),  # past the data
        (DAY0 + 5 * H, DAY0 + 5 * H),  # empty
    ],
)
def test_tiles_aggregate_as_the_raw_readings(
    db: Db, sensor: int, lo: datetime, hi: datetime
) -> None:
    _assert_tiles_as_raw(db, sensor, lo, hi)


def _source(lo: datetime, hi: datetime) -> tuple[str, dict[str, datetime]]:
    """The tiles of [lo, hi), and the parameters of the minutes its bounds cut."""
    cut, values = rollups.cut_minutes([lo, hi])
    source = rollups.tiled(
        "%(sensor)s", "%(lo)s::timestamptz", "%(hi)s::timestamptz", "%(quantity)s", cut_minutes=cut
    )
    return source, values


def _assert_tiles_as_raw(
    db: Db, sensor: int, lo: datetime, hi: datetime
) -> tuple[object, ...] | None:
    """The tiles' aggregates over [lo, hi) equal the raw readings'; returns them (None: empty)."""
    values = {"sensor": sensor, "quantity": QUANTITIES["pm25"].key, "lo": lo, "hi": hi}
    source, cuts = _source(lo, hi)
    tiled = db.execute(_AGGREGATES.format(source=source), {**values, **cuts}).fetchone()
    raw = db.execute(_RAW, values).fetchone()
    assert tiled is not None
    assert raw is not None
    count, total, low, high, first, last, _rows = tiled
    if raw[0] == 0:
        assert count is None
        return None
    assert (count, low, high, first, last) == (raw[0], raw[2], raw[3], raw[4], raw[5])
    assert total == pytest.approx(raw[1], rel=1e-12)
    return tiled


def test_whole_days_come_from_the_daily_rollup(db: Db, sensor: int) -> None:
    values = {"sensor": sensor, "lo": DAY0, "hi": DAY0 + timedelta(days=3)}
    source = rollups.tiled(
        "%(sensor)s", "%(lo)s::timestamptz", "%(hi)s::timestamptz", cut_minutes="true"
    )
    row = db.execute(_AGGREGATES.format(source=source), values).fetchone()
    assert row is not None
    assert row[-1] == 3  # three day rows
    # Off by 30 s at each end: 23 hours + 59 minutes + the raw readings of the cut minute at the
    # start, one day, and 7 hours + 0 minutes + the cut minute's readings at the end.
    values = {
        "sensor": sensor,
        "lo": DAY0 + 30 * S,
        "hi": DAY0 + timedelta(days=2, hours=7, seconds=30),
    }
    row = db.execute(_AGGREGATES.format(source=source), values).fetchone()
    assert row is not None
    # Rows: the raw readings of 30-59 s of the first minute (at 35, 42, 49, 56 s), minutes
    # 1-59 and hours 1-23 of the first day, the second day whole, hours 0-6 of the third day,
    # and its 7:00 minute's readings before 7:00:30 (at 7 s steps from midnight: 7 h is 198,000 s
    # from DAY0, so 198,002, 198,009, 198,016 and 198,023 s).
    assert row[-1] == (4 + 59 + 23) + 1 + (7 + 4)


def _raw_scans(db: Db, sensor: int, lo: datetime, hi: datetime, cut: str | None = None) -> int:
    """Scans of readings in the plan of the tiles of [lo, hi) (``cut``: as ``tiled``; by default
    the minutes lo and hi cut)."""
    cut_values: dict[str, datetime] = {}
    if cut is None:
        cut, cut_values = rollups.cut_minutes([lo, hi])
    source = rollups.tiled(
        "%(sensor)s", "%(lo)s::timestamptz", "%(hi)s::timestamptz", cut_minutes=cut
    )
    values = {"sensor": sensor, "lo": lo, "hi": hi, **cut_values}
    return raw_scans(db, _AGGREGATES.format(source=source), values)


def test_whole_minutes_read_no_raw_readings(db: Db, sensor: int) -> None:
    lo, hi = DAY0 + 5 * H + 17 * M, DAY0 + timedelta(days=2, hours=7, minutes=43)
    assert rollups.cut_minutes([lo, hi]) == (None, {})
    whole = _raw_scans(db, sensor, lo, hi)
    cut = _raw_scans(db, sensor, lo, hi + 30 * S)
    # TimescaleDB's real-time aggregation reads the newest chunks of readings under the rollups
    # whatever the bounds; the raw legs of a cut minute come on top of it.
    assert whole < cut
    if storage_mode(db) == "partitioned":
        assert whole == 0


def test_the_raw_legs_are_pruned_to_the_cut_minutes_while_planning(db: Db, sensor: int) -> None:
    lo, hi = DAY0 + 5 * H + 17 * M + 30 * S, DAY0 + timedelta(days=2, hours=7, minutes=43)
    pruned = _raw_scans(db, sensor, lo, hi)
    unpruned = _raw_scans(db, sensor, lo, hi, cut="true")
    assert pruned < unpruned
    if storage_mode(db) == "partitioned":
        # Each of the two raw legs plans the one partition of the cut minute (the right leg's
        # bounds are no constants, so only its cut-minute terms prune).
        assert pruned == 2


def test_cut_minutes_name_each_minute_cut() -> None:
    lo, hi = DAY0 + 30 * S, DAY0 + timedelta(days=1, minutes=3, microseconds=5)
    condition, values = rollups.cut_minutes([lo, DAY0 + H, hi, lo], name="c")
    assert values == {
        "c_0": DAY0,
        "c_0_end": DAY0 + M,
        "c_1": DAY0 + D + 3 * M,
        "c_1_end": DAY0 + D + 4 * M,
    }
    assert condition is not None
    assert condition.count(" OR ") == 1
    every_second = [DAY0 + i * (M + S) for i in range(1, rollups.MOST_CUT_MINUTES + 2)]
    assert rollups.cut_minutes(every_second) == ("true", {})


# Europe/Paris changed to summer time on 2026-03-29 at 01:00 UTC and back on 2026-10-25 at
# 01:00 UTC: in that session TimeZone, timestamptz + '1 day' is 23 hours, then 25.
SPRING = datetime(2026, 3, 28, tzinfo=UTC)
AUTUMN = datetime(2026, 10, 24, tzinfo=UTC)
D = timedelta(days=1)


@pytest.fixture
def dst_sensor(db: Db) -> int:
    """Readings every 7 s over three UTC days around each change (2 x 37,028)."""
    return _seed(db, "air-t-dst", [SPRING, AUTUMN], AUTUMN + 3 * D + M)


# Ranges across each change: whole days, 00:30 on the day of the change (its ceiling to a day was
# 23 h later), over midnight, off everything, and whole days ending after the 25-hour day.
DST_RANGES = [
    (SPRING, SPRING + 3 * D),
    (SPRING + D + 30 * M, SPRING + 2 * D + 5 * H),
    (SPRING + 23 * H + 30 * M, SPRING + 2 * D + 1 * H),
    (SPRING + 23 * H + 59 * M + 59 * S, SPRING + 2 * D + S),
    (AUTUMN, AUTUMN + 3 * D),
    (AUTUMN + 13 * H + 17 * M + 30 * S, AUTUMN + 2 * D + 22 * H + 43 * M + 10 * S),
    (AUTUMN + D + 30 * M, AUTUMN + 2 * D + 5 * H),
    (AUTUMN + 2 * H, AUTUMN + 2 * D),
]


def test_a_daylight_saving_session_tiles_as_utc(db: Db, dst_sensor: int) -> None:
    for lo, hi in DST_RANGES:
        db.execute("SET TimeZone = 'UTC'")
        in_utc = _assert_tiles_as_raw(db, dst_sensor, lo, hi)
        db.execute("SET TimeZone = 'Europe/Paris'")
        in_paris = _assert_tiles_as_raw(db, dst_sensor, lo, hi)
        assert in_utc is not None
        assert in_paris == in_utc, (lo, hi)
