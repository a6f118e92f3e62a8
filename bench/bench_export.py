"""Open-data export rates on a year of a city's data (issue 16), against baselines from the same
run, with the peak memory that shows the export streams.

Seed (a fresh database on one server, partition mode): the simulated ``small`` city's registry
(200 sensors, every kind) and ``--days`` days (a year) of hourly rollups for every sensor and
quantity it measures, written straight into ``readings_1h`` (and ``readings_1d`` from them):
the export reads the rollups, and a year of raw readings would take an hour to write first.

Readings at the hourly rollup, per sensor (``--rollup 1h --level sensor``), the same rows each:

  COPY baseline    ``COPY (<the export's own query>) TO STDOUT (FORMAT csv)`` through psycopg:
                   what the database alone takes to produce the rows as CSV
  cursor baseline  ``exporter.readings``: the rows through the export's server-side cursor,
                   into Python tuples, not encoded
  CLI <format>     ``urbanpulse export readings ... -o FILE`` in its own process (interpreter
                   start included); its peak RSS (``wait4``'s ru_maxrss) against the same
                   command exporting one day. CSV and JSON are written by PostgreSQL (COPY of
                   the same query, each value formatted in SQL), Parquet from the cursor's rows
  API <format>     ``GET /v1/exports/readings`` over real HTTP from ``urbanpulse api`` (uvicorn,
                   one process), the body streamed to a file by the client; the server's peak
                   RSS (``VmHWM``) after start-up and after each export

KPI values (``--kpi-grain`` buckets over the same year, every KPI, each district and the city):
the engine computing them (``exporter.kpi_rows``, not encoded) is the baseline; then the CLI
and the API in each format. (They are few rows: the engine's work, not the encoding, is the
cost, and they are gathered before they are encoded.)

    .venv/bin/python bench/bench_export.py [--days 365] [--kpi-grain day]

Without --database-url (or URBANPULSE_BENCH_DATABASE_URL) it starts an embedded PostgreSQL
with the durable settings of ``urbanpulse up``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_api
import httpx2 as httpx
import psycopg
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from gateway.kinds import KINDS, QUANTITIES
from services.api.keys import create_key
from services.dataio import exporter
from services.dataio.exporter import Level, OutputFormat, Rollup, Selection
from services.devstack.postgres import EmbeddedPostgres
from services.storage import migrate
from services.storage import registry as registry_load
from services.storage.urls import libpq_url, with_database
from simulators.city import build_manifest, small_city

FORMATS = (OutputFormat.CSV, OutputFormat.JSON, OutputFormat.PARQUET)


# --- seed ----------------------------------------------------------------------------------


def seed(server: str, start: datetime, end: datetime) -> tuple[str, int]:
    """A fresh database with the city's registry and hourly rollups over [start, end); its URL
    and the number of hourly rows."""
    name = f"bench_export_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    migrate.upgrade(url, mode="partitioned")
    manifest = build_manifest(small_city(), seed=7, installed_at=start - timedelta(days=1))
    with psycopg.connect(libpq_url(url)) as conn:
        result = registry_load.load(conn, manifest.json())
        if result.errors:
            raise SystemExit(f"registry load failed: {result.errors[:3]}")
        conn.commit()
        series = [
            # sensor, quantity, a level inside the quantity's bounds, a daily swing around it
            (key, QUANTITIES[q].key, b.low + (b.high - b.low) * 0.3, (b.high - b.low) * 0.05)
            for key, kind in conn.execute("SELECT key, kind FROM sensors").fetchall()
            for q, b in KINDS[kind].quantities.items()
        ]
        conn.execute(
            "CREATE TEMP TABLE series (sensor_key int, quantity_key smallint, mid float8, "
            "swing float8)"
        )
        with conn.cursor().copy("COPY series FROM STDIN") as copy:
            for row in series:
                copy.write_row(row)
        # Twelve readings an hour (a five-minute sensor), the hour's mean on a daily curve.
        conn.execute(
            "INSERT INTO readings_1h (bucket, sensor_key, quantity_key, count, sum, min, max, "
            "first, last, first_time, last_time) "
            "SELECT h, s.sensor_key, s.quantity_key, 12, 12 * v, v - s.swing / 10, "
            "v + s.swing / 10, v, v, h, h + interval '55 minutes' FROM series s, "
            "generate_series(%s::timestamptz, %s::timestamptz - interval '1 hour', "
            "interval '1 hour') h, "
            "LATERAL (SELECT s.mid + s.swing * sin(extract(epoch FROM h) / 13751.0 "
            "+ s.sensor_key)) AS c(v)",
            (start, end),
        )
        conn.execute(
            "INSERT INTO readings_1d (bucket, sensor_key, quantity_key, count, sum, min, max, "
            "first, last, first_time, last_time) "
            "SELECT date_trunc('day', bucket, 'UTC'), sensor_key, quantity_key, sum(count), "
            "sum(sum), min(min), max(max), min(first), max(last), min(first_time), "
            "max(last_time) FROM readings_1h GROUP BY 1, 2, 3"
        )
        conn.commit()
        rows = conn.execute("SELECT count(*) FROM readings_1h").fetchone()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    assert rows is not None
    return url, int(rows[0])


# --- measures ------------------------------------------------------------------------------


@dataclass
class Figure:
    variant: str
    rows: int
    seconds: float
    size: int  # bytes out
    peak_mb: float | None = None  # peak RSS of the process that did the work


def _query(selection: Selection) -> tuple[psycopg.sql.Composed, dict[str, object]]:
    query = exporter.readings_query(Rollup.HOUR, Level.SENSOR)
    return query, exporter.query_params(selection)


def copy_baseline(url: str, selection: Selection) -> Figure:
    query, params = _query(selection)
    size = rows = 0
    with psycopg.connect(libpq_url(url)) as conn, psycopg.ClientCursor(conn) as cur:
        started = time.perf_counter()
        # COPY takes no bind parameters: the values are bound client-side, into the text.
        with cur.copy(f"COPY ({cur.mogrify(query, params)}) TO STDOUT (FORMAT csv)") as copy:
            for chunk in copy:
                size += len(chunk)
                rows += bytes(chunk).count(b"\n")
        seconds = time.perf_counter() - started
    return Figure("COPY (query) TO STDOUT csv", rows, seconds, size)


def cursor_baseline(url: str, selection: Selection) -> Figure:
    with psycopg.connect(libpq_url(url)) as conn:
        started = time.perf_counter()
        rows = sum(1 for _ in exporter.readings(conn, selection, Rollup.HOUR, Level.SENSOR))
        seconds = time.perf_counter() - started
    return Figure("export cursor, rows not encoded", rows, seconds, 0)


def kpi_baseline(url: str, selection: Selection, grain: str) -> Figure:
    with psycopg.connect(libpq_url(url)) as conn:
        started = time.perf_counter()
        rows = sum(1 for _ in exporter.kpi_rows(conn, selection, grain))
        seconds = time.perf_counter() - started
    return Figure("engine, rows not encoded", rows, seconds, 0)


def rows_in(path: Path, fmt: OutputFormat) -> int:
    if fmt is OutputFormat.PARQUET:
        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as stream:
        data = iter(lambda: stream.read(1 << 20), b"")
        lines = sum(chunk.count(b"\n") for chunk in data)
    # CSV: a header line; JSON: "[", an object a line, "]" (each on a line of its own).
    return lines - 1 if fmt is OutputFormat.CSV else lines - 2


def cli(
    url: str, what: str, selection: Selection, fmt: OutputFormat, out: Path, extra: list[str]
) -> Figure:
    """The export command in its own process; its peak RSS from wait4."""
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "export",
        what,
        "--start",
        selection.start.isoformat(),
        "--end",
        selection.end.isoformat(),
        "--format",
        fmt.value,
        "--output",
        str(out),
        "--database-url",
        url,
        *extra,
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode})")
    size = out.stat().st_size
    return Figure(f"CLI {fmt.value}", rows_in(out, fmt), seconds, size, usage.ru_maxrss / 1024)


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``urbanpulse api`` with one process (uvicorn serves in it), sensor-level open data."""
    os.environ["URBANPULSE_OPEN_DATA_SENSOR_LEVEL"] = "sensor"  # the child's environment
    return bench_api.serve(url, workers=1)


def peak_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmHWM for process {pid}")


def api(
    base: str, key: str, pid: int, path: str, params: dict[str, str], fmt: OutputFormat, out: Path
) -> Figure:
    started = time.perf_counter()
    with (
        httpx.Client(base_url=base, timeout=600) as client,
        client.stream(
            "GET", path, params={**params, "format": fmt.value}, headers={"X-API-Key": key}
        ) as response,
        out.open("wb") as sink,
    ):
        if response.status_code != 200:
            response.read()
            raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
        for chunk in response.iter_bytes():
            sink.write(chunk)
    seconds = time.perf_counter() - started
    size = out.stat().st_size
    return Figure(f"API {fmt.value}", rows_in(out, fmt), seconds, size, peak_mb(pid))


# --- report --------------------------------------------------------------------------------


def table(title: str, figures: list[Figure]) -> None:
    print(f"\n{title}")
    print(
        f"{'variant':<36} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'MB out':>8} {'peak RSS':>9}"
    )
    for f in figures:
        peak = f"{f.peak_mb:.0f} MB" if f.peak_mb is not None else "-"
        print(
            f"{f.variant:<36} {f.rows:>10,} {f.seconds:>8.2f} {f.rows / f.seconds:>10,.0f} "
            f"{f.size / 1e6:>8.1f} {peak:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365, help="days of hourly rollups")
    parser.add_argument(
        "--kpi-grain", default="day", choices=["hour", "day", "week", "month", "year"]
    )
    parser.add_argument("--database-url", default=os.environ.get("URBANPULSE_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    server = args.database_url
    embedded = None
    if not server:
        embedded = EmbeddedPostgres()
        server = embedded.start()
    api_process = None
    try:
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        t0 = time.perf_counter()
        url, hourly = seed(server, start, end)
        print(
            f"seeded {hourly:,} hourly rows ({args.days} days) in {time.perf_counter() - t0:.0f} s"
        )
        year = Selection(start, end)
        day = Selection(end - timedelta(days=1), end)
        with psycopg.connect(libpq_url(url)) as conn:
            _, key = create_key(conn, "bench", "service")
        api_process, base = serve(url)
        started_mb = peak_mb(api_process.pid)
        period = {"start": start.isoformat(), "end": end.isoformat()}
        readings = [copy_baseline(url, year), cursor_baseline(url, year)]
        kpis = [kpi_baseline(url, year, args.kpi_grain)]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            level = ["--rollup", "1h", "--level", "sensor"]
            one_day = cli(url, "readings", day, OutputFormat.CSV, out / "day.csv", level)
            one_day.variant = "CLI csv, one day (start-up floor)"
            readings.append(one_day)
            # (what, its figures, its CLI options, its API query)
            exports = (
                ("readings", readings, level, {**period, "rollup": "1h", "level": "sensor"}),
                ("kpis", kpis, ["--grain", args.kpi_grain], {**period, "grain": args.kpi_grain}),
            )
            for what, figures, options, query in exports:
                for fmt in FORMATS:
                    file = out / f"{what}.{fmt.value}"
                    figures.append(cli(url, what, year, fmt, file, options))
                for fmt in FORMATS:
                    file = out / f"api_{what}.{fmt.value}"
                    path = f"/v1/exports/{what}"
                    figures.append(api(base, key, api_process.pid, path, query, fmt, file))
        print(
            f"\none run on a shared 2-core machine, partition mode; the API's peak RSS after "
            f"start-up: {started_mb:.0f} MB; this bench process: "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        span = f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}"
        table(f"readings, hourly rollup, per sensor, {args.days} days ({span})", readings)
        table(f"KPI values, grain {args.kpi_grain}, every KPI, districts and city", kpis)
        for figures in (readings, kpis):
            expected = figures[0].rows
            wrong = [
                f.variant for f in figures if f.rows != expected and "one day" not in f.variant
            ]
            if wrong:
                raise SystemExit(f"rows differ from the baseline's {expected:,}: {wrong}")
    finally:
        if api_process is not None:
            api_process.terminate()
            api_process.wait(30)
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
