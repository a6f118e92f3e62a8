"""Disk per reading, raw and compressed, for deploy/SCALING.md's yearly figures.

Writes ``--sensors`` x ``--minutes`` one-minute readings (a smooth signal plus noise, like a
voltage or a temperature; a constant would compress far better than real data) into a fresh,
migrated database, then measures ``readings`` with its primary key: in partition mode on the
embedded PostgreSQL, and in TimescaleDB mode (``--timescale-url`` or
``URBANPULSE_BENCH_TIMESCALE_URL``) before and after compressing every chunk with the
migration's settings (segment by sensor and quantity, order by time).

    .venv/bin/python bench/bench_disk.py [--sensors 1000] [--minutes 1000]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from services.devstack.postgres import EmbeddedPostgres
from services.storage import migrate
from services.storage.urls import libpq_url, with_database

MINUTES_A_YEAR = 525_600
FILL = """
INSERT INTO readings (time, sensor_key, quantity_key, value)
SELECT ts, s, 1, round((230 + 5 * sin(extract(epoch FROM ts) / 3600 + s) + random())::numeric, 2)
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute',
                     interval '1 minute') AS ts,
     generate_series(1, %(sensors)s) AS s
"""
SIZE_PARTITIONED = """
SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('readings') WHERE isleaf
"""


def _database(server_url: str) -> str:
    name = f"urbanpulse_bench_disk_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(server_url, name)


def _drop(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill(url: str, sensors: int, minutes: int) -> float:
    # Inside the last day: the partitions made at migration cover it.
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes)
    began = time.perf_counter()
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(FILL, {"start": start, "end": end, "sensors": sensors})
        conn.commit()
        conn.execute("ANALYZE readings")
    return time.perf_counter() - began


def _report(label: str, size: int, rows: int) -> float:
    per = size / rows
    print(
        f"{label:<34} {size / 1e6:9.1f} MB  {per:6.1f} B/reading  "
        f"1 M sensors/min: {per * 1e6 * MINUTES_A_YEAR / 1e12:6.1f} TB/year  "
        f"10 M: {per * 1e7 * MINUTES_A_YEAR / 1e12:7.1f} TB/year"
    )
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=1000)
    parser.add_argument("--timescale-url", default=os.environ.get("URBANPULSE_BENCH_TIMESCALE_URL"))
    args = parser.parse_args()
    rows = args.sensors * args.minutes
    print(f"{rows:,} readings ({args.sensors} sensors x {args.minutes} minutes)")

    with EmbeddedPostgres() as server_url:
        url = _database(server_url)
        migrate.upgrade(url, mode="partitioned")
        seconds = _fill(url, args.sensors, args.minutes)
        with psycopg.connect(libpq_url(url)) as conn:
            row = conn.execute(SIZE_PARTITIONED).fetchone()
        assert row is not None
        _report("partitioned (PostgreSQL 18)", int(row[0]), rows)
        print(f"  (filled in {seconds:.1f} s)")
        _drop(server_url, url)

    if not args.timescale_url:
        print("TimescaleDB: skipped (set --timescale-url or URBANPULSE_BENCH_TIMESCALE_URL)")
        return
    url = _database(args.timescale_url)
    try:
        migrate.upgrade(url, mode="timescaledb")
        _fill(url, args.sensors, args.minutes)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            before = conn.execute("SELECT hypertable_size('readings')").fetchone()
            conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings') c")
            after = conn.execute("SELECT hypertable_size('readings')").fetchone()
        assert before is not None
        assert after is not None
        raw = _report("TimescaleDB, uncompressed", int(before[0]), rows)
        compressed = _report("TimescaleDB, compressed", int(after[0]), rows)
        print(f"  compression ratio {raw / compressed:.1f}x")
    finally:
        _drop(args.timescale_url, url)


if __name__ == "__main__":
    main()
