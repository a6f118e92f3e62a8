"""The idempotent write path against its baselines, in one run on one server.

Rows are readings (time, sensor key, quantity key, value) for 2,000 sensors, written in batches.
Measured, each into a fresh table:
  copy_unkeyed   binary COPY into a table with no key (the ceiling for getting bytes in)
  copy_keyed     binary COPY straight into the keyed readings table (not idempotent)
  idempotent     ReadingWriter: binary COPY to staging + INSERT ... ON CONFLICT DO NOTHING,
                 on 1 connection and on 2 connections (2 processes)
  idempotent_dup the same batches again (a full redelivery: every row a duplicate)
  idempotent_conflict the same keys with other values (every row a conflict, found and returned)
  direct         ReadingWriter(direct=True): COPY straight into readings under a savepoint,
                 staging + ON CONFLICT only for a batch the key refuses (issue 15); then the
                 same batches again (every batch refused, so every one falls back: the worst
                 case, which the pack ledger keeps from happening for gateways' resends)
  insert_per_row one INSERT per row, autocommit (what a naive ingestor does; fewer rows)
plus the client-side cost of building the COPY stream (struct) against psycopg's row writer.

    .venv/bin/python bench/bench_write.py [--rows 1000000] [--batch 5000] [--database-url URL]

Without --database-url (or URBANPULSE_BENCH_DATABASE_URL) it starts an embedded PostgreSQL
with the same durable settings as `urbanpulse up` (fsync on).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from services.devstack.postgres import EmbeddedPostgres
from services.storage import migrate
from services.storage.urls import libpq_url, with_database
from services.storage.writer import ReadingWriter, encode_copy

Row = tuple[float, int, int, float]
SENSORS = 2000


def make_rows(count: int, start: float, sensor_offset: int = 0) -> list[Row]:
    # Sensors report every 60 s, each batch a slice of the city's minute: the shape of live load.
    return [
        (start + (i // SENSORS) * 60.0, sensor_offset + 1 + i % SENSORS, 8, 230.0 + i % 97 / 10)
        for i in range(count)
    ]


def batches(rows: list[Row], size: int) -> list[list[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def fresh_database(server: str, rows: list[Row]) -> str:
    """A migrated database whose partitions already cover ``rows`` (no variant pays for them)."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    migrate.upgrade(url, mode="partitioned")
    idempotent(url, [[(min(r[0] for r in rows), 1, 1, 0.0), (max(r[0] for r in rows), 1, 1, 0.0)]])
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("TRUNCATE readings, rollup_invalidations")
    return url


def copy_into(url: str, table: str, parts: list[list[Row]]) -> None:
    with psycopg.connect(libpq_url(url)) as conn:
        for part in parts:
            with conn.cursor().copy(
                f"COPY {table} (time, sensor_key, quantity_key, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(encode_copy(part))
            conn.commit()


def shifted(parts: list[list[Row]]) -> list[list[Row]]:
    """The same keys with other values: every row a conflict."""
    return [[(t, s, q, v + 1.0) for t, s, q, v in part] for part in parts]


def idempotent(
    url: str, parts: list[list[Row]], live_events: bool = False, direct: bool = False
) -> int:
    inserted = 0
    with psycopg.connect(libpq_url(url)) as conn:
        writer = ReadingWriter(conn, "partitioned", live_events=live_events, direct=direct)
        for part in parts:
            inserted += writer.write(part).inserted
            conn.commit()
    return inserted


def _worker(args: tuple[str, list[list[Row]]]) -> int:
    return idempotent(*args)


def insert_per_row(url: str, rows: list[Row]) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for t, s, q, v in rows:
            conn.execute(
                "INSERT INTO readings (time, sensor_key, quantity_key, value) "
                "VALUES (to_timestamp(%s), %s, %s, %s)",
                (t, s, q, v),
            )


def copy_rows_psycopg(url: str, table: str, parts: list[list[Row]]) -> None:
    """The same COPY through psycopg's binary row writer, which needs a datetime per row."""
    with psycopg.connect(libpq_url(url)) as conn:
        for part in parts:
            with conn.cursor().copy(
                f"COPY {table} (time, sensor_key, quantity_key, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["timestamptz", "int4", "int2", "float8"])
                for t, s, q, v in part:
                    copy.write_row((datetime.fromtimestamp(t, UTC), s, q, v))
            conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument(
        "--per-row", type=int, default=20_000, help="rows for the INSERT-per-row baseline"
    )
    parser.add_argument("--database-url", default=os.environ.get("URBANPULSE_BENCH_DATABASE_URL"))
    args = parser.parse_args()

    server = args.database_url
    embedded = None
    if not server:
        embedded = EmbeddedPostgres()
        server = embedded.start()
    try:
        start = float(int(time.time()) // 86400 * 86400 - 86400 * 3)
        rows = make_rows(args.rows, start)
        parts = batches(rows, args.batch)
        results: list[tuple[str, int, float]] = []

        url = fresh_database(server, rows)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            for table in ("unkeyed", "unkeyed_rows"):
                conn.execute(
                    f"CREATE TABLE {table} (time timestamptz, sensor_key int4, "
                    "quantity_key int2, value float8)"
                )
        results.append(
            (
                "encode (struct, client only)",
                len(rows),
                timed(lambda: [encode_copy(p) for p in parts]),
            )
        )
        results.append(("copy_unkeyed", len(rows), timed(lambda: copy_into(url, "unkeyed", parts))))
        results.append(
            (
                "copy_unkeyed, psycopg write_row",
                len(rows),
                timed(lambda: copy_rows_psycopg(url, "unkeyed_rows", parts)),
            )
        )
        results.append(("copy_keyed", len(rows), timed(lambda: copy_into(url, "readings", parts))))

        url = fresh_database(server, rows)
        results.append(
            ("idempotent, 1 connection", len(rows), timed(lambda: idempotent(url, parts)))
        )
        results.append(
            ("idempotent, all duplicates", len(rows), timed(lambda: idempotent(url, parts)))
        )
        other = shifted(parts)
        results.append(
            ("idempotent, all conflicts", len(rows), timed(lambda: idempotent(url, other)))
        )

        url = fresh_database(server, rows)
        results.append(
            (
                "direct, 1 connection",
                len(rows),
                timed(lambda: idempotent(url, parts, direct=True)),
            )
        )
        results.append(
            (
                "direct, all duplicates (fallback)",
                len(rows),
                timed(lambda: idempotent(url, parts, direct=True)),
            )
        )
        url = fresh_database(server, rows)
        results.append(
            (
                "direct + live events, 1 connection",
                len(rows),
                timed(lambda: idempotent(url, parts, live_events=True, direct=True)),
            )
        )

        # What the live stream's event log (one event per batch of new rows) costs.
        url = fresh_database(server, rows)
        results.append(
            (
                "idempotent + live events, 1 connection",
                len(rows),
                timed(lambda: idempotent(url, parts, live_events=True)),
            )
        )

        url = fresh_database(server, rows)
        halves = [
            (url, batches(make_rows(args.rows // 2, start, sensor_offset=k * SENSORS), args.batch))
            for k in range(2)
        ]
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results.append(
                ("idempotent, 2 connections", args.rows, timed(lambda: pool.map(_worker, halves)))
            )

        few = make_rows(args.per_row, start + 3600)
        url = fresh_database(server, few)
        results.append(
            ("insert_per_row, autocommit", len(few), timed(lambda: insert_per_row(url, few)))
        )

        base = {name: count / seconds for name, count, seconds in results}
        ref = base["idempotent, 1 connection"]
        print(
            f"\nwrite path, {args.rows:,} rows, batches of {args.batch:,} "
            f"({'embedded PostgreSQL' if embedded else 'given server'})"
        )
        print(f"{'variant':<42}{'rows':>11}{'seconds':>10}{'rows/s':>12}{'vs idempotent':>15}")
        for name, count, seconds in results:
            rate = count / seconds
            print(f"{name:<42}{count:>11,}{seconds:>10.2f}{rate:>12,.0f}{rate / ref:>14.2f}x")
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
