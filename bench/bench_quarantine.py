"""What one amplifying pack costs: 10,000 unknown sensors' records in one message (issue 11).

Runs a real worker against a real broker (Mosquitto if installed, else rumqttd) and an embedded
PostgreSQL, publishes the pack, and prints what it cost: quarantine rows, payload bytes stored,
the tables' size on disk, the worker's time (publish to commit, and its flush time), and the
process's peak memory. Baseline from the same run: a pack of 5,000 valid records (the most a
pack may hold now), stored.

    .venv/bin/python bench/bench_quarantine.py [--records 10000]

The script reads either quarantine layout (before migration 0004: one row per rejected record,
each with a copy of the payload; after: the payload once in quarantine_messages), so the
"before" figure comes from running this same script on the old code, e.g.

    git clone -q . /tmp/before && git -C /tmp/before checkout <old commit>
    cp bench/bench_quarantine.py /tmp/before/bench/
    cd /tmp/before && PYTHONPATH=/tmp/before <worktree>/.venv/bin/python bench/bench_quarantine.py
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway import topics
from gateway.senml import Record, encode
from services.devstack.broker import start_broker
from services.devstack.postgres import EmbeddedPostgres
from services.ingest.worker import IngestWorker, WorkerConfig
from services.storage import migrate
from services.storage.urls import libpq_url, with_database

GATEWAY = "gw-bench"


def _database(server: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    migrate.upgrade(url, mode="partitioned")
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("INSERT INTO gateways (id) VALUES (%s)", [GATEWAY])
        conn.execute(
            "INSERT INTO sensors (id, kind, domain, gateway_id) "
            "SELECT 'fdr-' || i, 'feeder_meter', 'energy', %s FROM generate_series(0, 9) i",
            [GATEWAY],
        )
    return url


def _pack(records: int, sensor: str | None, now: float) -> bytes:
    """``records`` voltages: of one registered sensor (10 ms apart), or of as many unknown
    sensors (``sensor`` None), all ten minutes old."""
    return encode(
        Record(
            name=f"{sensor or f'ghost-{i}'}/voltage",
            time=now - 600 + (i / 100 if sensor else 0),
            unit="V",
            value=230.0,
        )
        for i in range(records)
    )


def _quarantine_cost(url: str) -> tuple[int, int, int]:
    """(rows, payload bytes stored, bytes on disk) of the quarantine, whatever its layout."""
    with psycopg.connect(libpq_url(url)) as conn:
        rows = int(conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])  # type: ignore[index]
        shared = conn.execute("SELECT to_regclass('quarantine_messages')").fetchone()[0]  # type: ignore[index]
        tables = ["quarantine"] + (["quarantine_messages"] if shared else [])
        payload_sql = "SELECT coalesce(sum(length(payload)), 0) FROM " + (
            "quarantine_messages" if shared else "quarantine"
        )
        payload = int(conn.execute(payload_sql).fetchone()[0])  # type: ignore[index]
        disk = 0
        for table in tables:
            size = conn.execute("SELECT pg_total_relation_size(%s)", [table]).fetchone()
            disk += int(size[0]) if size else 0
    return rows, payload, disk


def _run_pack(broker_url: str, url: str, payload: bytes) -> tuple[float, float]:
    """Publish ``payload`` to a fresh worker; (seconds from publish to commit, flush seconds)."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    worker = IngestWorker(
        WorkerConfig(
            database_url=url,
            mqtt_url=broker_url,
            client_id=f"bench-{uuid.uuid4().hex[:8]}",
            session_expiry_s=60,
        )
    )
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, ready.set), daemon=True)
    thread.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the worker did not subscribe")
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        publisher.connect(host, int(port))
        publisher.loop_start()
        started = time.perf_counter()
        publisher.publish(topics.up_topic(GATEWAY), payload, qos=1).wait_for_publish(30)
        deadline = time.monotonic() + 600
        while worker.stats.messages < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        publisher.disconnect()
        publisher.loop_stop()
        flush = worker.metrics.registry.get_sample_value("urbanpulse_ingest_flush_seconds_sum")
        return elapsed, flush or 0.0
    finally:
        stop.set()
        thread.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()

    postgres = EmbeddedPostgres()
    server = postgres.start()
    broker = start_broker()
    try:
        now = float(int(time.time()))
        good = _pack(5_000, "fdr-0", now)
        bad = _pack(args.records, None, now)

        url = _database(server)
        good_s, good_flush = _run_pack(broker.url, url, good)
        url = _database(server)
        bad_s, bad_flush = _run_pack(broker.url, url, bad)
        rows, payload, disk = _quarantine_cost(url)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        print(f"\none pack of {args.records:,} records ({broker.kind}, embedded PostgreSQL)")
        print(f"{'pack':<36}{'bytes':>10}{'publish->commit':>17}{'flush':>9}")
        print(
            f"{'5,000 valid records (baseline)':<36}{len(good):>10,}{good_s:>16.3f}s"
            f"{good_flush:>8.3f}s"
        )
        label = f"{args.records:,} unknown sensors"
        print(f"{label:<36}{len(bad):>10,}{bad_s:>16.3f}s{bad_flush:>8.3f}s")
        print(f"quarantine rows           {rows:>15,}")
        print(f"payload bytes stored      {payload:>15,}  ({payload / len(bad):,.1f}x the pack)")
        print(f"quarantine on disk        {disk:>15,}")
        print(f"peak RSS of this process  {peak:>12,.0f} MiB")
    finally:
        broker.close()
        postgres.stop()


if __name__ == "__main__":
    main()
