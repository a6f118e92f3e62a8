"""Cumulative registers read at the bucket boundaries (``queries/_registers.py``): which readings
bracket a boundary, the interpolated index, and when a register is unread.

Every case is a customer water meter (nominal interval 900 s, so a boundary's tolerance is
3 x 900 s = 45 min on each side) whose index is read over one day; the expected indexes are
worked out in the case's comment.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.kinds import QUANTITIES
from services.kpi.catalog import KPIS
from services.kpi.model import KpiQuery
from services.kpi.queries._registers import REGISTER_INDEXES, REGISTER_SPAN, TOLERANCE_INTERVALS
from services.kpi.queries._sql import BUCKETS_CTE, SENSOR_EXPECTED, params

from ..conftest import City

DAY = datetime(2026, 3, 5, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
RATE = 0.001  # m3/s: the linear meters' index is 1000 m3 at DAY and 1086.4 m3 at NEXT_DAY


def _minutes(*offsets: float) -> list[datetime]:
    return [DAY + timedelta(minutes=m) for m in offsets]


def _every_15(
    first: float = -60, last: float = 1440 + 60, *, but: Iterable[float] = ()
) -> list[datetime]:
    """Readings every 15 min from ``first`` to ``last`` minutes after DAY, except ``but``."""
    skipped = set(but)
    return _minutes(*(m for m in range(int(first), int(last) + 1, 15) if m not in skipped))


def _linear(times: list[datetime]) -> list[tuple[datetime, float]]:
    return [(t, 1000.0 + RATE * (t - DAY).total_seconds()) for t in times]


_QUERY = f"""
WITH {BUCKETS_CTE},
register_spans AS (
    SELECT b.bucket_start, s.id, s.key, %(index)s::smallint AS quantity_key, s.interval_s,
           {REGISTER_SPAN}
    FROM buckets b JOIN sensors s ON s.kind = 'water_meter' AND {SENSOR_EXPECTED}
),
{REGISTER_INDEXES}
SELECT sp.bucket_start, sp.id, ri.index_start, ri.index_end
FROM register_spans sp
LEFT JOIN register_indexes ri ON ri.bucket_start = sp.bucket_start AND ri.key = sp.key
"""

Indexes = tuple[float | None, float | None]


def _read(city: City, query: KpiQuery) -> dict[tuple[datetime, str], Indexes]:
    """(bucket start, meter id) -> (index at the start, index at the end); None: unread."""
    values = params(query, index=QUANTITIES["index"].key, register_tolerance=TOLERANCE_INTERVALS)
    rows = city.conn.execute(_QUERY, values).fetchall()
    return {(b, str(i)): (_float(start), _float(end)) for b, i, start, end in rows}  # type: ignore[misc]


def _indexes(city: City, query: KpiQuery) -> dict[str, Indexes]:
    return {meter: indexes for (_, meter), indexes in _read(city, query).items()}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


END = 1000.0 + RATE * 86400  # 1086.4 m3

# (id, readings, registry columns, (index at start, index at end); None: unread)
CASES: list[tuple[str, list[tuple[datetime, float]], dict[str, Any], tuple[Any, Any]]] = [
    # Readings at 00:00 on both days: no interpolation.
    ("on-the-boundaries", _linear(_every_15()), {}, (1000.0, END)),
    # Read at :07, :22, :37, :52: each boundary interpolated between 23:52 and 00:07.
    ("off-the-boundaries", _linear(_every_15(-53, 1447)), {}, (1000.0, END)),
    # The next day's 00:00 reading lost: 23:45 and 00:15, 15 min either side, bracket it.
    ("midnight-lost", _linear(_every_15(but=[1440])), {}, (1000.0, END)),
    # 23:30, 23:45 and 00:00 lost: 23:15 is exactly 45 min (3 intervals) before: still read.
    ("pre-at-tolerance", _linear(_every_15(but=[1410, 1425, 1440])), {}, (1000.0, END)),
    # 23:15 to 00:00 lost: the nearest reading before, 23:00, is 60 min away: unread at the end.
    ("pre-beyond-tolerance", _linear(_every_15(but=[1395, 1410, 1425, 1440])), {}, (1000.0, None)),
    # 00:00 to 00:45 the next day lost: the next reading, 01:00, is 60 min after: unread.
    ("post-beyond-tolerance", _linear(_every_15(but=[1440, 1455, 1470, 1485])), {}, (1000.0, None)),
    # Silent from 23:45: nothing brackets the end (the next bucket's first reading is missing).
    ("no-next-reading", _linear(_every_15(last=1425)), {}, (1000.0, None)),
    # First read at 00:15 though in service before: nothing brackets the start.
    ("no-reading-before", _linear(_every_15(first=15)), {}, (None, END)),
    # Installed at 06:00, first read 06:05: the start is its installation, read from the first
    # reading after it: 1000 + 0.001 x 21900 s = 1021.9.
    (
        "installed-inside",
        _linear(_every_15(365, 1445)),
        {"installed_at": DAY + timedelta(hours=6)},
        (1021.9, END),
    ),
    # Retired at 18:00, last read 17:50: 1000 + 0.001 x 64200 s = 1064.2.
    (
        "retired-inside",
        _linear(_every_15(-55, 1070)),
        {"retired_at": DAY + timedelta(hours=18), "status": "retired"},
        (1000.0, 1064.2),
    ),
    # Not linear: 100 at 23:50 the day before, 103 at 00:05: 100 + 3 x 10/15 = 102 at 00:00;
    # 200 at 23:55, 203 at 00:10 the next day: 200 + 3 x 5/15 = 201 at the end.
    (
        "interpolated",
        list(zip(_minutes(-10, 5, 1435, 1450), (100.0, 103.0, 200.0, 203.0), strict=True)),
        {},
        (102.0, 201.0),
    ),
]


@pytest.mark.parametrize(
    ("meter", "readings", "columns", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_index_at_each_boundary(
    city: City,
    meter: str,
    readings: list[tuple[datetime, float]],
    columns: dict[str, Any],
    expected: tuple[float | None, float | None],
) -> None:
    city.district("d1")
    key = city.sensor(meter, "water_meter", "d1", dma="A", **columns)
    city.write([(key, "index", t, v) for t, v in readings])
    start, end = _indexes(city, KpiQuery([(DAY, NEXT_DAY)]))[meter]
    assert (start, end) == pytest.approx(expected)


def test_boundaries_share_their_index_so_buckets_add_up(city: City) -> None:
    city.district("d1")
    # Used only 06:00-22:00 at 0.001 m3/s, read at :07, :22, :37, :52.
    key = city.sensor("wm-1", "water_meter", "d1", dma="A")

    def index(t: datetime) -> float:
        used = min(max((t - DAY).total_seconds(), 6 * 3600), 22 * 3600) - 6 * 3600
        return 500.0 + RATE * used

    city.write([(key, "index", t, index(t)) for t in _every_15(-53, 1447)])
    hours = [(DAY + timedelta(hours=h), DAY + timedelta(hours=h + 1)) for h in range(24)]
    by_hour = _hourly(city, hours)
    # 12:00-13:00 lies inside the use: 0.001 x 3600 = 3.6 m3 (linear between 11:52 and 12:07).
    assert by_hour[12] == pytest.approx(3.6)
    # 06:00 falls between 05:52 (500) and 06:07 (500.42): 500 + 0.42 x 8/15 = 500.224, so
    # 05:00-06:00 gets 0.224 m3 used after 06:00 and 06:00-07:00 the rest, 3.6 - 0.224 = 3.376:
    # moved between neighbours, never lost.
    assert by_hour[5] == pytest.approx(0.224)
    assert by_hour[6] == pytest.approx(3.376)
    # The hours add up to the day: 0.001 x 57600 s = 57.6 m3.
    assert sum(by_hour.values()) == pytest.approx(57.6)
    assert _indexes(city, KpiQuery([(DAY, NEXT_DAY)]))["wm-1"] == pytest.approx((500.0, 557.6))


def _hourly(city: City, hours: list[tuple[datetime, datetime]]) -> dict[int, float]:
    used: dict[int, float] = {}
    for (bucket, _), (start, end) in _read(city, KpiQuery(hours)).items():
        assert start is not None, bucket
        assert end is not None, bucket
        used[bucket.hour] = end - start
    return used


def test_boundary_inside_a_minute(city: City) -> None:
    city.district("d1")
    # Read every 20 s at :10, :30, :50 (interval 20 s, tolerance 60 s); the bucket starts at
    # 00:00:40, inside the minute whose first reading (00:00:10) and last (00:00:50) bracket it:
    # linear at 0.001 m3/s, the index there is 1000 + 0.04 = 1000.04.
    key = city.sensor("wm-20", "water_meter", "d1", dma="A", interval_s=20)
    start = DAY + timedelta(seconds=10)
    city.series(key, "index", start, DAY + timedelta(hours=1), step_s=20,
                value=lambda t: 1000.0 + RATE * (t - DAY).total_seconds())  # fmt: skip
    bucket = (DAY + timedelta(seconds=40), DAY + timedelta(minutes=30, seconds=40))
    # The end, 00:30:40, between 00:30:30 and 00:30:50: 1000 + 0.001 x 1840 = 1001.84.
    assert _indexes(city, KpiQuery([bucket]))["wm-20"] == pytest.approx((1000.04, 1001.84))


def test_boundaries_off_the_hour_are_read_from_the_minute_rollup(city: City) -> None:
    city.district("d1")
    # Bucket 00:30-12:30 (boundaries off the whole hour: probed in readings_1m). Meter a lost
    # its 00:30 reading: 00:15 and 00:45 bracket the start, 1000 + 0.001 x 1800 = 1001.8; its
    # end is read at 12:30: 1000 + 0.001 x 45000 = 1045. Meter b lost 11:45 to 12:30: the
    # nearest reading before 12:30 is 11:30, 60 min away: unread at the end.
    a = city.sensor("wm-a", "water_meter", "d1", dma="A")
    b = city.sensor("wm-b", "water_meter", "d1", dma="A")
    city.write(
        [(a, "index", t, v) for t, v in _linear(_every_15(but=[30]))]
        + [(b, "index", t, v) for t, v in _linear(_every_15(but=[705, 720, 735, 750]))]
    )
    bucket = (DAY + timedelta(minutes=30), DAY + timedelta(hours=12, minutes=30))
    indexes = _indexes(city, KpiQuery([bucket]))
    assert indexes["wm-a"] == pytest.approx((1001.8, 1045.0))
    assert indexes["wm-b"] == pytest.approx((1001.8, None))


def test_a_running_bucket_ends_now_at_the_latest_rate(city: City) -> None:
    city.district("d1")
    key = city.sensor("wm-now", "water_meter", "d1", dma="A")
    now = datetime.now(UTC)
    # Read 62, 47, 32, 17 and 2 min ago (indexes 10 to 14, 1 m3 every 15 min); the bucket
    # began 40 min ago and runs for 20 min more. Its start lies between the readings of 47 and
    # 32 min ago (11 and 12): 11 + 1 x 7/15 = 11.4667. Its end is now, where no later reading
    # can exist yet: the last reading carried on at the rate since the one before,
    # 14 + 1 x 2/15 = 14.1333 (plus 1/900 m3 a second the query starts after ``now``).
    times = [now - timedelta(minutes=m) for m in (62, 47, 32, 17, 2)]
    city.write([(key, "index", t, 10.0 + n) for n, t in enumerate(times)])
    bucket = (now - timedelta(minutes=40), now + timedelta(minutes=20))
    start, end = _indexes(city, KpiQuery([bucket]))["wm-now"]
    assert start == pytest.approx(11 + 7 / 15)
    assert end == pytest.approx(14 + 2 / 15, abs=5 / 900)  # the query runs within 5 s


def test_a_running_bucket_of_a_retired_or_new_register(city: City) -> None:
    city.district("d1")
    now = datetime.now(UTC)
    times = [now - timedelta(minutes=m) for m in (62, 47, 32, 17, 2)]
    # Retired a minute ago: its end is the retirement, the last reading as it is (14).
    retired = city.sensor("wm-retired", "water_meter", "d1", dma="A", status="retired",
                          retired_at=now - timedelta(minutes=1))  # fmt: skip
    # First read 2 min ago, no reading before it within the tolerance: no rate to carry it on,
    # unread at the end.
    new = city.sensor("wm-new", "water_meter", "d1", dma="A")
    city.write([(retired, "index", t, 10.0 + n) for n, t in enumerate(times)]
               + [(new, "index", times[-1], 3.0)])  # fmt: skip
    bucket = (now - timedelta(minutes=40), now + timedelta(minutes=20))
    indexes = _indexes(city, KpiQuery([bucket]))
    assert indexes["wm-retired"] == pytest.approx((11 + 7 / 15, 14.0))
    assert indexes["wm-new"] == (None, None)


@pytest.mark.parametrize("kpi_id", ["WAT-1", "ENE-3"])
def test_the_catalog_states_the_tolerance_the_queries_use(kpi_id: str) -> None:
    assert f"within {TOLERANCE_INTERVALS:g} reporting intervals" in KPIS[kpi_id].definition
