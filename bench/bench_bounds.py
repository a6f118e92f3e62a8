"""A year off the hour against the same year on whole days (issue 10): a year-long KPI and a
year of one sensor's readings, through the real API on a real PostgreSQL.

1. Seed: an embedded PostgreSQL (fsync off: only the reads are timed), ``--stations`` PM2.5
   stations reading every minute for a year and two days, written through the ingestion write
   path (ReadingWriter), rolled up (readings_1m, readings_1h, readings_1d).
2. Time, each ``--runs`` times (median), in the same run:
   - AIR-1 over the year for the city and its districts (``GET /v1/kpis/AIR-1/values``, the
     API's 60 s answer cache emptied before each request), with the bounds on whole UTC days,
     30 s off the minute (the issue's ``...T00:00:30Z``), and off the hour (05:17:30 to
     07:43:10);
   - one station's readings over the same three years-long ranges (``GET
     /v1/sensors/{id}/readings``, resolution auto: daily points, the cut edge days tiled);
   - the baseline of what an off-hour range cost before: the KPI's rows read from
     ``readings_1m`` for the whole year (direct SQL, one aggregate; it flatters the old path);
   - how long PostgreSQL takes to plan each station's tiled read of the three ranges
     (``EXPLAIN``'s planning time), and, as the baseline, the same with raw legs whatever the
     bounds and not pruned to the minutes they cut, as every range was planned before: such a
     raw leg makes the planner expand every partition of ``readings``.
   Prints each median, and the ratio of each off-hour figure to the whole-day one.

Target: off the hour within 2x of whole days.

    .venv/bin/python bench/bench_bounds.py [--stations 4] [--runs 5] [--data-dir DIR]

(``--data-dir``: the server's data is kept there, and a later run reuses it instead of seeding.)
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
from fastapi.testclient import TestClient

from gateway.kinds import QUANTITIES
from services.api.app import create_app
from services.api.keys import create_key
from services.devstack.postgres import EmbeddedPostgres
from services.settings import Settings
from services.storage import migrate, rollups
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter

DAYS = 365
BATCH = 200_000
TARGET_RATIO = 2.0


def seed(url: str, stations: int, first_day: datetime) -> dict[str, float]:
    """``stations`` stations in two districts, a reading a minute from ``first_day`` for
    DAYS + 2 days; returns the seconds spent writing and rolling up."""
    migrate.upgrade(url, "partitioned")
    pm25 = QUANTITIES["pm25"].key
    with psycopg.connect(libpq_url(url)) as conn:
        for district in ("d01", "d02"):
            conn.execute("INSERT INTO districts (id, name) VALUES (%s, %s)", (district, district))
        keys = []
        for i in range(stations):
            row = conn.execute(
                "INSERT INTO sensors (id, kind, domain, district_id, interval_s) "
                "VALUES (%s, 'air_quality', 'environment', %s, 60) RETURNING key",
                (f"air-{i:02d}", "d01" if i % 2 == 0 else "d02"),
            ).fetchone()
            assert row is not None
            keys.append(int(row[0]))
        conn.commit()
        writer = ReadingWriter(conn, "partitioned")
        t0 = time.perf_counter()
        start = first_day.timestamp()
        minutes = (DAYS + 2) * 1440
        written = 0
        rows: list[tuple[float, int, int, float]] = []
        for m in range(minutes):
            t = start + 60 * m
            for n, key in enumerate(keys):
                # A daily cycle plus a station offset: means differ by day and by station.
                rows.append((t, key, pm25, 8.0 + n + (m % 1440) / 144.0))
            if len(rows) >= BATCH:
                written += writer.write(rows).inserted
                conn.commit()
                rows = []
        written += writer.write(rows).inserted
        conn.commit()
        write_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        rollups.refresh(conn, "partitioned", now=first_day + timedelta(days=DAYS + 2, minutes=1))
        rollup_s = time.perf_counter() - t1
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"seeded {written:,} readings in {write_s:.0f} s, rolled up in {rollup_s:.0f} s")
    return {"write_s": write_s, "rollup_s": rollup_s}


def median_ms(work: Callable[[], None], runs: int) -> float:
    work()  # warm: plans, caches, the pool's connections
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        work()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _ranges(year_start: datetime, year_end: datetime) -> dict[str, tuple[datetime, datetime]]:
    return {
        "whole days": (year_start, year_end),
        "30 s off the minute": (
            year_start + timedelta(seconds=30),
            year_end + timedelta(seconds=30),
        ),
        "off the hour": (
            year_start + timedelta(hours=5, minutes=17, seconds=30),
            year_end + timedelta(hours=7, minutes=43, seconds=10),
        ),
    }


# A year-long KPI's core: each station's readings over the range from the rows that tile it.
_TILED_PER_STATION = """
SELECT s.key, sum(r.count), sum(r.sum)
FROM sensors AS s CROSS JOIN LATERAL {tiles} AS r
WHERE s.kind = 'air_quality'
GROUP BY s.key
"""


def planning_ms(
    url: str, lo: datetime, hi: datetime, runs: int, *, unpruned: bool = False
) -> float:
    """The median time PostgreSQL takes to plan the tiled read of [lo, hi) of every station
    (EXPLAIN's "Planning Time"): raw legs only for the minutes lo and hi cut, pruned to them;
    ``unpruned``: raw legs whatever the bounds, over all of ``readings``, as before."""
    cut, cut_values = rollups.cut_minutes([lo, hi])
    tiles = rollups.tiled(
        "s.key",
        "%(lo)s::timestamptz",
        "%(hi)s::timestamptz",
        "%(q)s",
        cut_minutes="true" if unpruned else cut,
    )
    statement = "EXPLAIN (SUMMARY, FORMAT JSON) " + _TILED_PER_STATION.format(tiles=tiles)
    values = {"lo": lo, "hi": hi, "q": QUANTITIES["pm25"].key, **cut_values}
    with psycopg.connect(libpq_url(url)) as conn:
        samples = []
        for _ in range(runs + 1):  # the first warms the catalog caches
            row = conn.execute(statement, values).fetchone()
            assert row is not None
            samples.append(float(row[0][0]["Planning Time"]))
    return statistics.median(samples[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--data-dir", type=Path, help="keep the server here (default: a temporary directory)"
    )
    args = parser.parse_args()

    first_day = (datetime.now(UTC) - timedelta(days=DAYS + 4)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )

    server = EmbeddedPostgres(
        args.data_dir, fast=True, settings={"shared_buffers": "512MB", "work_mem": "32MB"}
    )
    url = server.start()
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            seeded = conn.execute("SELECT to_regclass('sensors') IS NOT NULL").fetchone()
        if seeded == (True,):
            print(f"reusing the data in {args.data_dir}")
            with psycopg.connect(libpq_url(url)) as conn:
                row = conn.execute("SELECT min(time) FROM readings").fetchone()
            assert row is not None
            first_day = row[0]
        else:
            seed(url, args.stations, first_day)
        year_start = first_day + timedelta(days=1)
        year_end = year_start + timedelta(days=DAYS)
        ranges = _ranges(year_start, year_end)
        with psycopg.connect(libpq_url(url)) as conn:
            _, key = create_key(conn, "bench", "service")
            conn.commit()
        settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
        headers = {"X-API-Key": key}
        results: dict[str, dict[str, float]] = {"kpi": {}, "readings": {}}
        app = create_app(settings)
        with TestClient(app) as client:
            for name, (lo, hi) in ranges.items():
                params = {"start": lo.isoformat(), "end": hi.isoformat()}

                def kpi(params: dict[str, str] = params) -> None:
                    if hasattr(app.state, "kpi_cache"):
                        del app.state.kpi_cache  # computed, not a cached answer
                    response = client.get("/v1/kpis/AIR-1/values", params=params, headers=headers)
                    assert response.status_code == 200, response.text

                def readings(params: dict[str, str] = params) -> None:
                    response = client.get(
                        "/v1/sensors/air-00/readings",
                        params={**params, "quantity": "pm25"},
                        headers=headers,
                    )
                    assert response.status_code == 200, response.text
                    assert len(response.json()["points"]) >= DAYS

                results["kpi"][name] = median_ms(kpi, args.runs)
                results["readings"][name] = median_ms(readings, args.runs)

        def minute_rollup_year() -> None:
            with psycopg.connect(libpq_url(url)) as conn:
                conn.execute(
                    "SELECT sensor_key, sum(count), sum(sum) FROM readings_1m "
                    "WHERE quantity_key = %s AND bucket >= %s AND bucket < %s GROUP BY 1",
                    (QUANTITIES["pm25"].key, year_start, year_end),
                ).fetchall()

        baseline_ms = median_ms(minute_rollup_year, args.runs)
        planning = {name: planning_ms(url, lo, hi, args.runs) for name, (lo, hi) in ranges.items()}
        before = {
            name: planning_ms(url, lo, hi, args.runs, unpruned=True)
            for name, (lo, hi) in ranges.items()
        }
    finally:
        server.stop()

    print(f"\n{args.stations} stations, a reading a minute, {DAYS} days; median of {args.runs}")
    print(f"{'':34}{'whole days':>12}{'30 s off':>12}{'off the hour':>14}{'worst ratio':>13}")
    rows = [
        ("AIR-1 year, city + districts (ms)", results["kpi"]),
        ("one sensor's year of readings (ms)", results["readings"]),
    ]
    for label, figures in rows:
        whole = figures["whole days"]
        worst = max(figures["30 s off the minute"], figures["off the hour"]) / whole
        print(
            f"{label:34}{whole:12.1f}{figures['30 s off the minute']:12.1f}"
            f"{figures['off the hour']:14.1f}{worst:12.2f}x"
        )
    print(
        f"{'planning, each station tiled (ms)':34}{planning['whole days']:12.1f}"
        f"{planning['30 s off the minute']:12.1f}{planning['off the hour']:14.1f}"
    )
    print(f"baseline: the year's readings_1m rows of the KPI, one aggregate: {baseline_ms:.1f} ms")
    print(
        f"{'baseline: planning, raw legs unpruned':34}{before['whole days']:12.1f}"
        f"{before['30 s off the minute']:12.1f}{before['off the hour']:14.1f}"
    )
    print(f"target: off the hour within {TARGET_RATIO:g}x of whole days")


if __name__ == "__main__":
    main()
