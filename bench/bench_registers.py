"""What reading cumulative registers at the bucket boundaries costs (issue 10, section 3).

Measures, on an embedded PostgreSQL (partitioned mode) seeded in the same run with one district
metered area (DMA): an inflow meter read every minute and ``--meters`` customer meters read every
15 min for ``--days`` days (water used 06:00-22:00 only), the median time of ``--repeat`` runs
(after a warm-up) of WAT-1, non-revenue water (``services.kpi.queries.water``), computed:

- ``WAT-1, 1 bucket``: the whole span as one value (2 boundaries a meter);
- ``WAT-1, daily``: one bucket a day (days + 1 boundaries a meter);
- ``WAT-1, hourly, last 7 days``: 168 buckets.

Each boundary is two index probes per meter (``queries/_registers.py``): in ``readings_1h`` when
it is a whole UTC hour, else in ``readings_1m``, so the cost follows meters x buckets, not the
readings in a bucket. Baselines, on the same data:

- ``stretched core``: each meter's first and last reading per bucket from the rollup that tiles
  the buckets (``readings_1d`` for days, ``readings_1h`` for hours), the read the old last - first
  method made (its SIV and the rest of the balance left out, which flatters it);
- ``raw scan``: each meter's max - min index over the raw readings of the span.

Prints a table of query, buckets, median ms and rows returned, and the WAT-1 value found.

    .venv/bin/python bench/bench_registers.py [--meters 500] [--days 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from gateway.kinds import QUANTITIES
from services.devstack.postgres import EmbeddedPostgres
from services.kpi.model import KpiQuery
from services.kpi.queries.water import non_revenue_water
from services.storage import migrate, rollups
from services.storage.urls import libpq_url, with_database
from services.storage.writer import ReadingWriter

DATABASE = "bench_registers"
BATCH = 50_000
METER_STEP_S = 900
INFLOW_STEP_S = 60

Conn = psycopg.Connection[tuple[object, ...]]


def seed(conn: Conn, meters: int, start: datetime, days: int) -> int:
    """One DMA: an inflow meter every minute, ``meters`` customer meters every 15 min (water used
    06:00-22:00), from ``start`` to the first reading after the last day; returns readings."""
    conn.execute("INSERT INTO districts (id, name) VALUES ('d1', 'd1')")
    conn.execute("INSERT INTO gateways (id, district_id) VALUES ('gw-d1', 'd1')")
    conn.execute(
        "INSERT INTO sensors (id, kind, domain, gateway_id, district_id, interval_s, dma) "
        "VALUES ('wi-a', 'water_inflow', 'water', 'gw-d1', 'd1', %s, 'A')",
        (INFLOW_STEP_S,),
    )
    conn.execute(
        "INSERT INTO sensors (id, kind, domain, gateway_id, district_id, interval_s, dma) "
        "SELECT 'wm-' || n, 'water_meter', 'water', 'gw-d1', 'd1', %s, 'A' "
        "FROM generate_series(1, %s) AS n",
        (METER_STEP_S, meters),
    )
    keys = {str(row[0]): row[1] for row in conn.execute("SELECT id, key FROM sensors").fetchall()}
    inflow_key = int(str(keys.pop("wi-a")))
    meter_keys = sorted(int(str(k)) for k in keys.values())
    conn.commit()
    writer = ReadingWriter(conn, "partitioned")
    flow, index = QUANTITIES["flow"].key, QUANTITIES["index"].key
    t0 = start.timestamp()
    written = 0
    for day in range(days + 1):
        rows: list[tuple[float, int, int, float]] = []
        lo = t0 + day * 86_400
        hi = lo + (86_400 if day < days else METER_STEP_S)  # the day after: its first reading
        for t in range(int(lo), int(hi), INFLOW_STEP_S):
            in_use = 6 * 3600 <= (t - t0) % 86_400 < 22 * 3600
            rows.append((float(t), inflow_key, flow, 0.05 if in_use else 0.0))
        for n, key in enumerate(meter_keys):
            for t in range(int(lo), int(hi), METER_STEP_S):
                elapsed = t - t0
                used_today = min(max(elapsed % 86_400, 6 * 3600), 22 * 3600) - 6 * 3600
                used = (elapsed // 86_400) * 16 * 3600 + used_today
                rows.append((float(t), key, index, 10.0 * n + 5e-5 * used))
        for i in range(0, len(rows), BATCH):
            written += writer.write(rows[i : i + BATCH]).inserted
            conn.commit()
        print(f"  day {day + 1}/{days + 1}: {written:,} readings", end="\r")
    print()
    return written


STRETCHED = """
WITH buckets AS (
    SELECT * FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS b(lo, hi)
)
SELECT b.lo, s.key,
       (array_agg(r.last ORDER BY r.last_time DESC))[1]
           - (array_agg(r.first ORDER BY r.first_time))[1] AS delta,
       max(r.last_time) - min(r.first_time) AS span
FROM buckets b
JOIN sensors s ON s.kind = 'water_meter'
JOIN {rollup} r ON r.sensor_key = s.key AND r.quantity_key = %(index)s
 AND r.bucket >= b.lo AND r.bucket < b.hi
GROUP BY b.lo, s.key
"""

RAW = """
SELECT sensor_key, max(value) - min(value)
FROM readings
WHERE quantity_key = %(index)s AND time >= %(lo)s AND time < %(hi)s
  AND sensor_key IN (SELECT key FROM sensors WHERE kind = 'water_meter')
GROUP BY sensor_key
"""


def timed(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` runs (after one warm-up) and the rows returned."""
    rows = run()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = run()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    server = EmbeddedPostgres(fast=True, settings={"shared_buffers": "512MB", "work_mem": "32MB"})
    base = server.start()
    try:
        with psycopg.connect(libpq_url(base), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DATABASE}")
        url = with_database(base, DATABASE)
        migrate.upgrade(url, "partitioned")
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        end -= timedelta(days=1)
        start = end - timedelta(days=args.days)
        with psycopg.connect(libpq_url(url)) as conn:
            print(f"seeding {args.meters} meters x {args.days} days from {start:%Y-%m-%d}")
            t0 = time.perf_counter()
            readings = seed(conn, args.meters, start, args.days)
            rollups.refresh(conn, "partitioned", now=end + timedelta(hours=1))
            print(f"seeded {readings:,} readings and rolled up in {time.perf_counter() - t0:.0f} s")
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

        days = [
            (start + timedelta(days=d), start + timedelta(days=d + 1)) for d in range(args.days)
        ]
        week = end - timedelta(days=7)
        hours = [(week + timedelta(hours=h), week + timedelta(hours=h + 1)) for h in range(168)]
        index = QUANTITIES["index"].key
        results: list[tuple[str, int, float, int]] = []
        with psycopg.connect(libpq_url(url)) as conn:

            def wat1(buckets: list[tuple[datetime, datetime]]) -> Callable[[], int]:
                return lambda: len(non_revenue_water(conn, KpiQuery(buckets)))

            def stretched(
                buckets: list[tuple[datetime, datetime]], rollup: str
            ) -> Callable[[], int]:
                values = {
                    "starts": [b[0] for b in buckets],
                    "ends": [b[1] for b in buckets],
                    "index": index,
                }
                statement = STRETCHED.format(rollup=rollup)
                return lambda: len(conn.execute(statement, values).fetchall())

            def raw() -> int:
                values = {"index": index, "lo": start, "hi": end}
                return len(conn.execute(RAW, values).fetchall())

            cases: list[tuple[str, int, Callable[[], int]]] = [
                ("WAT-1, 1 bucket", 1, wat1([(start, end)])),
                (
                    "stretched core, 1 bucket (readings_1d)",
                    1,
                    stretched([(start, end)], "readings_1d"),
                ),
                ("WAT-1, daily", len(days), wat1(days)),
                ("stretched core, daily (readings_1d)", len(days), stretched(days, "readings_1d")),
                ("WAT-1, hourly, last 7 days", len(hours), wat1(hours)),
                (
                    "stretched core, hourly (readings_1h)",
                    len(hours),
                    stretched(hours, "readings_1h"),
                ),
                ("raw scan, 1 bucket (readings)", 1, raw),
            ]
            (whole,) = [
                r for r in non_revenue_water(conn, KpiQuery([(start, end)])) if r.district_id
            ]
            nrw = float("nan") if whole.value is None else whole.value
            for name, buckets, run in cases:
                ms, rows = timed(run, args.repeat)
                results.append((name, buckets, ms, rows))
                conn.rollback()
        print()
        print(f"{args.meters} meters, {args.days} days, {readings:,} readings; WAT-1 = {nrw:.2f} %")
        print(f"median of {args.repeat} runs after a warm-up")
        print(f"| {'query':<42} | {'buckets':>7} | {'ms':>9} | {'rows':>7} |")
        print(f"|{'-' * 44}|{'-' * 8}:|{'-' * 10}:|{'-' * 8}:|")
        for name, buckets, ms, rows in results:
            print(f"| {name:<42} | {buckets:>7} | {ms:>9.1f} | {rows:>7} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
