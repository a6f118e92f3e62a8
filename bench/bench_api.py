"""API latency and throughput on 20 million readings of history (issue: business and application
layers), against the same endpoints' cost without the rollups.

1. Seed (once; kept in ``--data-dir`` and reused): an embedded PostgreSQL, the simulated city's
   registry (the 200-sensor ``small`` city), and ``--readings`` readings the simulator's own models
   generate, back from today at each sensor's interval, written through the ingestion write path
   (ReadingWriter: binary COPY, insert on conflict); then the rollups and the current KPI values.
2. Serve: ``urbanpulse api`` in its own process (``--workers`` uvicorn workers), as deployed.
3. Load: wrk, 50 connections (``--connections``), ``--duration`` seconds per endpoint, a Lua
   ``done`` hook reporting p50/p95/p99 and requests/s:
   - a district KPI for a month (``/v1/kpis/{id}/values``),
   - a city-wide KPI time series for a year at daily grain (``/v1/kpis/{id}/series``),
   - a sensor's readings for a week (``/v1/sensors/{id}/readings``, resolution auto).
4. Baseline without rollups: the same three answers computed from raw readings (the KPI's
   definition as SQL over ``readings``; the readings endpoint with ``resolution=raw``),
   timed with the same load where it is an endpoint, and as direct SQL where it is not (which
   flatters the baseline: no HTTP, no JSON).

Targets: p95 < 50 ms for each, >= 500 requests/s for the KPI endpoint on 2 cores.

    .venv/bin/python bench/bench_api.py [--readings 20000000] [--duration 15] [--workers 2]

Needs wrk (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2 as httpx
import psycopg

from gateway.kinds import QUANTITIES
from services.api.keys import create_key
from services.devstack.postgres import EmbeddedPostgres
from services.kpi import engine
from services.storage import migrate, rollups
from services.storage import registry as registry_load
from services.storage.urls import libpq_url, with_database
from services.storage.writer import ReadingWriter
from simulators.city import build_manifest, small_city
from simulators.runner import Simulation

DATABASE = "bench_api"
BATCH = 50_000
TARGET_P95_MS = 50.0
TARGET_KPI_RPS = 500.0
# The KPI the load asks for: PM2.5 (AIR-1) has stations in every district and a definition
# that is easy to restate over raw readings for the baseline.
KPI_ID = "AIR-1"

WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %.3f %.3f %.3f %d %d\\n",
    summary.requests, summary.duration, summary.errors.status + summary.errors.connect
      + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, summary.errors.status, summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 1. seed -------------------------------------------------------------------------------


def seeded(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        if conn.execute("SELECT to_regclass('city_settings')").fetchone() == (None,):
            return 0
        row = conn.execute(
            "SELECT value FROM city_settings WHERE name = 'bench_api_readings'"
        ).fetchone()
    return 0 if row is None else int(row[0])


def seed(url: str, readings: int) -> dict[str, Any]:
    """Registry, ``readings`` readings ending today, rollups, current KPIs; returns figures."""
    migrate.upgrade(url, "partitioned")
    manifest = build_manifest(small_city(), seed=7)
    with psycopg.connect(libpq_url(url)) as conn:
        result = registry_load.load(conn, manifest.json())
        if result.errors:
            raise SystemExit(f"registry load failed: {result.errors[:3]}")
        conn.commit()
        keys = dict(conn.execute("SELECT id, key FROM sensors").fetchall())
    sim = Simulation(manifest, seed=7)
    per_day = sum(len(s.model.quantities) * 86_400 // s.interval for s in sim.sensors)
    # Models leave some values out (dry containers, no speed without vehicles): ~2 % headroom.
    days = -(-readings // int(per_day * 0.98))
    end = int(time.time()) // 86_400 * 86_400
    start = end - days * 86_400
    print(
        f"seeding {days} days x {per_day:,} readings/day "
        f"from {datetime.fromtimestamp(start, UTC):%Y-%m-%d}"
    )
    written = 0
    t0 = time.perf_counter()
    with psycopg.connect(libpq_url(url)) as conn:
        writer = ReadingWriter(conn, "partitioned")
        for day in range(days):
            lo, hi = start + day * 86_400, start + (day + 1) * 86_400
            rows: list[tuple[float, int, int, float]] = []
            for sensor in sim.sensors:
                key = keys[sensor.spec.id]
                qkeys = [QUANTITIES[q].key for q in sensor.model.quantities]
                first = -(-lo // sensor.interval) * sensor.interval
                for t in range(first, hi, sensor.interval):
                    for qkey, value in zip(qkeys, sensor.model.sample(float(t)), strict=True):
                        if value is not None:
                            rows.append((float(t), key, qkey, value))
            for i in range(0, len(rows), BATCH):
                written += writer.write(rows[i : i + BATCH]).inserted
                conn.commit()
            print(
                f"  day {day + 1}/{days}: {written:,} readings, {time.perf_counter() - t0:.0f} s",
                end="\r",
            )
    write_s = time.perf_counter() - t0
    print()
    t1 = time.perf_counter()
    with psycopg.connect(libpq_url(url)) as conn:
        rollups.refresh(conn, "partitioned")
    rollup_s = time.perf_counter() - t1
    with psycopg.connect(libpq_url(url)) as conn:
        # What the database holds (a re-seed writes only the missing days' rows).
        conn.execute(
            "INSERT INTO city_settings (name, value) "
            "SELECT 'bench_api_readings', to_jsonb(count(*)) FROM readings "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        )
        conn.commit()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {"readings": written, "days": days, "write_s": write_s, "rollup_s": rollup_s}


def current_kpis(url: str) -> float:
    """Compute the current day, month and year of every KPI, as the monitor does; seconds."""
    t0 = time.perf_counter()
    with psycopg.connect(libpq_url(url)) as conn:
        engine.refresh_current(conn)
    return time.perf_counter() - t0


def database(data_dir: Path, readings: int) -> tuple[EmbeddedPostgres, str, dict[str, Any] | None]:
    """The embedded server on ``data_dir`` and the seeded database (seeding it if needed)."""
    server = EmbeddedPostgres(data_dir, settings={"shared_buffers": "1GB", "work_mem": "32MB"})
    base = server.start()
    url = with_database(base, DATABASE)
    with psycopg.connect(libpq_url(base), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DATABASE}")
    figures = None
    if seeded(url) < readings:
        figures = seed(url, readings)
    return server, url, figures


# --- 2. serve ------------------------------------------------------------------------------


def serve(url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The API as deployed: ``urbanpulse api --workers N``."""
    port = free_port()
    env = {**os.environ, "URBANPULSE_DATABASE_URL": url, "URBANPULSE_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "api",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the API did not start") from None
            time.sleep(0.2)
    return process, base


# --- 3. load -------------------------------------------------------------------------------


def wrk(base: str, path: str, key: str, duration: int, connections: int) -> dict[str, float]:
    """wrk against ``path``: requests/s and latency percentiles."""
    script = WRK_SCRIPT
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "10s",
                "-H",
                f"X-API-Key: {key}",
                "-s",
                f.name,
                base + path,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    result = next(line for line in out.splitlines() if line.startswith("RESULT"))
    requests, duration_us, errors, p50, p95, p99, *_ = result.split()[1:]
    return {
        "rps": int(requests) / (int(duration_us) / 1e6),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "errors": int(errors),
        "requests": int(requests),
    }


def probe(base: str, path: str, key: str) -> None:
    """One request first: a load of 4xx answers would measure nothing."""
    response = httpx.get(base + path, headers={"X-API-Key": key}, timeout=120)
    if response.status_code != 200:
        raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")


def timed_sql(url: str, sql: str, params: tuple[Any, ...], runs: int) -> dict[str, float]:
    """p50/p95 of one query run ``runs`` times on one connection (the raw-readings baseline)."""
    times = []
    with psycopg.connect(libpq_url(url)) as conn:
        for _ in range(runs):
            t0 = time.perf_counter()
            conn.execute(sql, params).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
    cuts = quantiles(times, n=20) if len(times) > 1 else times * 19
    return {"p50": sorted(times)[len(times) // 2], "p95": cuts[18], "runs": runs}


def engine_times(
    url: str, district: str | None, start: datetime, grain: str | None, runs: int
) -> dict[str, float]:
    """p50/p95 of ``engine.compute`` for ``runs`` different windows (30 days, or a year at a
    grain), each a day earlier than the last: what a request costs when the cache misses."""
    span = timedelta(days=30) if grain is None else timedelta(days=365)
    times = []
    with psycopg.connect(libpq_url(url)) as conn:
        for n in range(runs):
            lower = start - timedelta(days=n)
            t0 = time.perf_counter()
            engine.compute(
                conn,
                KPI_ID,
                lower,
                lower + span,
                grain=grain,
                districts=[district] if district else [],
                include_city=district is None,
            )
            times.append((time.perf_counter() - t0) * 1000)
    cuts = quantiles(times, n=20) if len(times) > 1 else times * 19
    return {"p50": sorted(times)[len(times) // 2], "p95": cuts[18], "runs": runs}


# AIR-1 straight from raw readings: valid station-days (>= 75 % of expected), their means, the
# district's worst station over the period / the city's worst station per day.
RAW_DISTRICT_MONTH = """
WITH station_days AS (
    SELECT r.sensor_key, date_trunc('day', r.time, 'UTC') AS day, avg(r.value) AS mean,
           count(*) AS n, max(s.interval_s) AS interval_s
    FROM readings r JOIN sensors s ON s.key = r.sensor_key
    WHERE s.kind = 'air_quality' AND s.district_id = %s AND r.quantity_key = %s
      AND r.time >= %s AND r.time < %s
    GROUP BY 1, 2)
SELECT max(station_mean) FROM (
    SELECT sensor_key, avg(mean) AS station_mean FROM station_days
    WHERE n >= 0.75 * 86400 / interval_s GROUP BY 1) stations
"""
RAW_CITY_YEAR_DAILY = """
WITH station_days AS (
    SELECT r.sensor_key, date_trunc('day', r.time, 'UTC') AS day, avg(r.value) AS mean,
           count(*) AS n, max(s.interval_s) AS interval_s
    FROM readings r JOIN sensors s ON s.key = r.sensor_key
    WHERE s.kind = 'air_quality' AND r.quantity_key = %s AND r.time >= %s AND r.time < %s
    GROUP BY 1, 2)
SELECT day, max(mean) FROM station_days WHERE n >= 0.75 * 86400 / interval_s
GROUP BY day ORDER BY day
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000_000)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "urbanpulse-bench-api"
    )
    parser.add_argument("--seed-only", action="store_true", help="seed the history and stop")
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per endpoint")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--baseline-runs", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None and not args.seed_only:
        raise SystemExit("wrk is needed: apt-get install wrk")
    server, url, figures = database(args.data_dir, args.readings)
    api = None
    try:
        if figures:
            print(
                f"seeded {figures['readings']:,} readings ({figures['days']} days) in "
                f"{figures['write_s']:.0f} s, rollups in {figures['rollup_s']:.0f} s"
            )
        print(
            f"current KPI values (every KPI, day/month/year, all scopes): {current_kpis(url):.1f} s"
        )
        if args.seed_only:
            return
        with psycopg.connect(libpq_url(url)) as conn:
            total = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
            district = conn.execute("SELECT min(id) FROM districts").fetchone()[0]  # type: ignore[index]
            station = conn.execute(
                "SELECT min(id) FROM sensors WHERE kind = 'air_quality' AND district_id = %s",
                (district,),
            ).fetchone()[0]  # type: ignore[index]
            first, last = conn.execute("SELECT min(time), max(time) FROM readings").fetchone()  # type: ignore[misc]
            _, key = create_key(conn, "bench", "service")
        now = last + timedelta(seconds=1)
        # The last whole month of the history, a year of days ending today, the last week.
        month_end = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        month_start = (month_end - timedelta(days=1)).replace(day=1)
        year_end = now.replace(hour=0, minute=0, second=0, microsecond=0)
        year_start = year_end - timedelta(days=365)
        week_start = now - timedelta(days=7)
        q = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
        pm25 = QUANTITIES["pm25"].key
        kpi_month = (
            f"/v1/kpis/{KPI_ID}/values?district={district}&city=false"
            f"&start={q(month_start)}&end={q(month_end)}"
        )
        series_year = f"/v1/kpis/{KPI_ID}/series?grain=day&start={q(year_start)}&end={q(year_end)}"
        readings_week = (
            f"/v1/sensors/{station}/readings?quantity=pm25&start={q(week_start)}&end={q(now)}"
        )
        readings_week_raw = readings_week + "&resolution=raw"
        print(
            f"\nAPI on {total:,} readings ({first:%Y-%m-%d} to {last:%Y-%m-%d}), "
            f"{args.workers} uvicorn workers, wrk -c{args.connections} -d{args.duration}s"
        )
        api, base = serve(url, args.workers)
        cases = [
            ("district KPI, a month (cached 60 s)", kpi_month),
            ("city KPI series, a year at daily grain", series_year),
            ("sensor readings, a week (auto: 1h rollup)", readings_week),
            ("baseline: sensor readings, a week, raw", readings_week_raw),
        ]
        results = []
        for name, path in cases:
            probe(base, path, key)
            results.append((name, wrk(base, path, key, args.duration, args.connections)))
        print(f"{'endpoint':<64}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for name, r in results:
            print(
                f"{name:<64}{r['rps']:>9,.0f}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}{r['errors']:>8}"
            )
        print(
            "\nbaseline without rollups: the KPI as SQL over raw readings "
            f"({args.baseline_runs} runs, one connection, no HTTP)"
        )
        raw = [
            (
                "district AIR-1, a month",
                timed_sql(
                    url,
                    RAW_DISTRICT_MONTH,
                    (district, pm25, month_start, month_end),
                    args.baseline_runs,
                ),
            ),
            (
                "city AIR-1, a year at daily grain",
                timed_sql(
                    url, RAW_CITY_YEAR_DAILY, (pm25, year_start, year_end), args.baseline_runs
                ),
            ),
        ]
        for name, r in raw:
            print(f"{name:<64}{'':>9}{r['p50']:>9.1f}{r['p95']:>9.1f}")
        print("\nuncached: the engine alone (no HTTP, no cache), 30-day windows a day apart")
        uncached = [
            (
                "district AIR-1, a month",
                engine_times(url, district, month_start, None, args.baseline_runs),
            ),
            (
                "city AIR-1, a year at daily grain",
                engine_times(url, None, year_start, "day", args.baseline_runs),
            ),
        ]
        for name, r in uncached:
            print(f"{name:<64}{'':>9}{r['p50']:>9.1f}{r['p95']:>9.1f}")
        kpi = results[0][1]
        verdict = all(r["p95"] < TARGET_P95_MS for n, r in results if not n.startswith("baseline"))
        print(
            f"\ntargets: p95 < {TARGET_P95_MS:.0f} ms on each: {'PASS' if verdict else 'FAIL'}; "
            f"KPI endpoint >= {TARGET_KPI_RPS:.0f} req/s: {kpi['rps']:,.0f} "
            f"{'PASS' if kpi['rps'] >= TARGET_KPI_RPS else 'FAIL'}"
        )
    finally:
        if api is not None:
            api.send_signal(signal.SIGTERM)
            api.wait(30)
        server.stop()


if __name__ == "__main__":
    main()
