"""History import rate against the live write path's, in one run on one server (issue 16).

The same readings (feeder-meter voltages, ``SENSORS`` sensors reporting every minute, the last
days) are stored, each variant into a fresh migrated database (partition mode) whose partitions
already exist:

  live path      what the ingestion worker does per batch once a message is off MQTT: SenML
                 packs of 100 records -> decode_salvaging -> Validator.validate ->
                 ReadingWriter(direct=True, live_events=True).write -> quarantine.store ->
                 commit, batches of 5000 records (its default), packs encoded before the clock;
                 then the rollup refresh over them (the maintenance loop's, timed apart)
  import csv     services.dataio.importer.import_file on a CSV file of the same readings
                 (sensor, quantity, time, value, unit), rollups refreshed at the end as
                 `urbanpulse import` does, and without that refresh (the write phase alone)
  import jsonl   the same readings as JSON lines, one pack of 100 records a line
  import parquet the same readings as a Parquet file

Targets: the CSV import at >= 80 % of the live path's rate, write phase against write phase,
and import with its rollup refresh against the live path with the same refresh.

    .venv/bin/python bench/bench_import.py [--readings 300000] [--database-url URL]

Without --database-url (or URBANPULSE_BENCH_DATABASE_URL) it starts an embedded PostgreSQL
with the durable settings of `urbanpulse up` (fsync on).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from gateway.senml import Record, encode
from services.dataio import importer
from services.dataio.sources import Format
from services.devstack.postgres import EmbeddedPostgres
from services.ingest.salvage import decode_salvaging
from services.ingest.sensor_directory import SensorDirectory
from services.ingest.validate import Policy, Validator
from services.storage import migrate, quarantine, rollups
from services.storage.urls import libpq_url, with_database
from services.storage.writer import ReadingWriter

SENSORS = 200
GATEWAY = "gw-bench"
PACK = 100
LIVE_BATCH = 5000
Reading = tuple[str, float, float]  # sensor id, time, value


def make_readings(count: int, end: float) -> list[Reading]:
    minutes = count // SENSORS
    start = end - minutes * 60.0
    return [
        (f"fdr-{i % SENSORS:04d}", start + (i // SENSORS) * 60.0, 220.0 + (i % 97) / 10)
        for i in range(minutes * SENSORS)
    ]


def fresh_database(server: str, readings: list[Reading]) -> str:
    name = f"bench_import_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    migrate.upgrade(url, mode="partitioned")
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("INSERT INTO gateways (id) VALUES (%s)", (GATEWAY,))
        for i in range(SENSORS):
            conn.execute(
                "INSERT INTO sensors (id, kind, domain, gateway_id) "
                "VALUES (%s, 'feeder_meter', 'energy', %s)",
                (f"fdr-{i:04d}", GATEWAY),
            )
        conn.commit()
        # Partitions for the whole range, then nothing left: no variant pays for them.
        writer = ReadingWriter(conn, "partitioned")
        key = conn.execute("SELECT min(key) FROM sensors").fetchone()
        assert key is not None
        first, last = readings[0][1], readings[-1][1]
        writer.write([(first, int(key[0]), 10, 230.0), (last, int(key[0]), 10, 230.0)])
        conn.execute("TRUNCATE readings, rollup_invalidations, rollup_watermarks")
        conn.commit()
    return url


def live_path(url: str, readings: list[Reading]) -> tuple[float, float]:
    """Seconds to store ``readings`` the worker's way (packs built before the clock), and then
    to refresh the rollups over them (the worker's maintenance does it within a minute)."""
    packs = [
        encode([Record(f"{s}/voltage", t, "V", v) for s, t, v in readings[i : i + PACK]])
        for i in range(0, len(readings), PACK)
    ]
    per_batch = LIVE_BATCH // PACK
    with psycopg.connect(libpq_url(url)) as conn:
        writer = ReadingWriter(conn, "partitioned", live_events=True, direct=True)
        sensors = SensorDirectory(conn)
        validator = Validator(Policy(max_age_s=400 * 86400.0))
        started = time.perf_counter()
        for i in range(0, len(packs), per_batch):
            now = time.time()
            rows = []
            extras = []
            for payload in packs[i : i + per_batch]:
                salvaged = decode_salvaging(payload, now)
                sensors.ensure(salvaged.records)
                checked = validator.validate(GATEWAY, salvaged.records, sensors.snapshot, now)
                rows.extend(checked.rows)
                extras.extend(checked.extras)
            result = writer.write(rows, extras)
            assert not result.conflicts
            quarantine.store(conn, [])
            conn.commit()
        written = time.perf_counter() - started
        rollups.refresh(conn, "partitioned")
        return written, time.perf_counter() - started


def write_csv(path: Path, readings: list[Reading]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sensor", "quantity", "time", "value", "unit"])
        for s, t, v in readings:
            writer.writerow([s, "voltage", datetime.fromtimestamp(t, UTC).isoformat(), v, "V"])


def write_jsonl(path: Path, readings: list[Reading]) -> None:
    with path.open("wb") as out:
        for i in range(0, len(readings), PACK):
            pack = [
                {"n": f"{s}/voltage", "t": t, "v": v, "u": "V"}
                for s, t, v in readings[i : i + PACK]
            ]
            out.write(json.dumps(pack).encode() + b"\n")


def write_parquet(path: Path, readings: list[Reading]) -> None:
    table = pa.table(
        {
            "sensor": [r[0] for r in readings],
            "quantity": ["voltage"] * len(readings),
            "time": pa.array([int(r[1] * 1e6) for r in readings], pa.timestamp("us", tz="UTC")),
            "value": [r[2] for r in readings],
            "unit": ["V"] * len(readings),
        }
    )
    pq.write_table(table, path)


def run_import(url: str, path: Path, fmt: Format, refresh: bool) -> tuple[float, int]:
    with psycopg.connect(libpq_url(url)) as conn, path.open("rb") as stream:
        started = time.perf_counter()
        result = importer.import_file(
            conn,
            stream,
            fmt,
            source=path.name,
            policy=Policy(max_age_s=400 * 86400.0),
            refresh=refresh,
        )
        return time.perf_counter() - started, result.stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--database-url", default=os.environ.get("URBANPULSE_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    server = args.database_url
    embedded = None
    if not server:
        embedded = EmbeddedPostgres()
        server = embedded.start()
    try:
        # Last year's November, as a city imports it: inside the retention, before this year
        # (so the import does not refresh the current KPI values, which the live path leaves
        # to the monitor).
        end = datetime(datetime.now(UTC).year - 1, 12, 1, tzinfo=UTC).timestamp()
        readings = make_readings(args.readings, end)
        count = len(readings)
        results: list[tuple[str, float]] = []
        live_write, live_total = live_path(fresh_database(server, readings), readings)
        results.append(("live path (decode, validate, write)", live_write))
        results.append(("live path + rollup refresh", live_total))
        with TemporaryDirectory() as tmp:
            makers: dict[Format, Callable[[Path, list[Reading]], None]] = {
                Format.CSV: write_csv,
                Format.JSONL: write_jsonl,
                Format.PARQUET: write_parquet,
            }
            files = {fmt: Path(tmp) / f"history.{fmt.value}" for fmt in makers}
            for fmt, make in makers.items():
                make(files[fmt], readings)
            for fmt, refresh in (
                (Format.CSV, False),
                (Format.CSV, True),
                (Format.JSONL, True),
                (Format.PARQUET, True),
            ):
                url = fresh_database(server, readings)
                seconds, stored = run_import(url, files[fmt], fmt, refresh)
                assert stored == count, (fmt, stored, count)
                label = f"import {fmt.value}" + (
                    " + rollup refresh" if refresh else " (write only)"
                )
                results.append((label, seconds))
        print(f"\n{count} readings, {SENSORS} sensors, one run, partition mode, fsync on\n")
        print(f"{'variant':<40} {'seconds':>8} {'readings/s':>12}")
        for label, seconds in results:
            print(f"{label:<40} {seconds:>8.2f} {count / seconds:>12,.0f}")
        for name, ours, theirs in (
            ("import csv (write only) vs live path", results[2][1], live_write),
            ("import csv + refresh vs live + refresh", results[3][1], live_total),
        ):
            ratio = theirs / ours
            verdict = "PASS" if ratio >= 0.8 else "FAIL"
            print(f"target >= 80 %: {name}: {ratio:.0%} {verdict}")
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
