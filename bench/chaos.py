"""Chaos, counted: readings published at QoS 1 through real gateways while the broker restarts,
the database stops and starts, and ingestion workers are killed and restarted at random moments.

Everything runs on this machine, on loopback, bounded in time: a real PostgreSQL (embedded, with
a data directory that survives its restarts), a real Mosquitto (persistence on), gateways that
are the project's own outbox + publisher, and `urbanpulse ingest` workers as processes. When the
chaos window closes, faults stop, the gateways drain their outboxes, and the script counts:

  published    distinct readings the gateways accepted into their outboxes
  stored       rows in the readings table
  missing      published and not stored (must be 0)
  unexpected   stored and never published (must be 0)
  quarantined  rows in quarantine (must be 0: every reading is valid)

Duplicates cannot reach the table (its key is (sensor, quantity, time)); what the workers absorbed
as redeliveries is visible in their logs. The fault schedule comes from --seed.

    .venv/bin/python bench/chaos.py [--minutes 3] [--seed 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from gateway.outbox import Outbox
from gateway.publisher import Publisher, PublisherOptions
from gateway.senml import Record, encode
from services.devstack.broker import Mosquitto
from services.devstack.postgres import EmbeddedPostgres, free_port
from services.storage import migrate

ROOT = Path(__file__).resolve().parent.parent
GATEWAYS = 4
SENSORS_PER_GATEWAY = 10
RECORDS_PER_PACK = 10


class Worker:
    """An `urbanpulse ingest` process that keeps its client id across restarts."""

    def __init__(
        self, index: int, database_url: str, mqtt_url: str, logs: Path, group: str | None
    ) -> None:
        self.client_id = f"chaos-ingest-{index}"
        self.group = group
        self.env = {
            **os.environ,
            "URBANPULSE_DATABASE_URL": database_url,
            "URBANPULSE_MQTT_URL": mqtt_url,
            "URBANPULSE_LOG_LEVEL": "WARNING",
        }
        self.log = logs / f"{self.client_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "ingest",
                    "--client-id",
                    self.client_id,
                    "--metrics-port",
                    "0",
                    *(["--group", self.group] if self.group else []),
                ],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
            self.process = None


def register(url: str) -> None:
    with psycopg.connect(url) as conn:
        for g in range(GATEWAYS):
            conn.execute("INSERT INTO gateways (id) VALUES (%s)", (f"gw-{g}",))
            for s in range(SENSORS_PER_GATEWAY):
                conn.execute(
                    "INSERT INTO sensors (id, kind, domain, gateway_id) VALUES "
                    "(%s, 'feeder_meter', 'energy', %s)",
                    (f"fdr-{g}-{s}", f"gw-{g}"),
                )


def gateway_loop(
    publisher: Publisher,
    gateway: int,
    stop: threading.Event,
    rate_hz: float,
    start: float,
    published: list[int],
) -> None:
    """Put packs at ``rate_hz``: each pack 10 readings of one sensor, times never repeating."""
    step = 0
    while not stop.is_set():
        sensor = step % SENSORS_PER_GATEWAY
        base = start + (step // SENSORS_PER_GATEWAY) * RECORDS_PER_PACK
        records = [
            Record(
                name=f"fdr-{gateway}-{sensor}/voltage",
                time=base + i,
                unit="V",
                value=230.0 + (i % 7),
            )
            for i in range(RECORDS_PER_PACK)
        ]
        publisher.put(encode(records))
        published[gateway] += RECORDS_PER_PACK
        step += 1
        stop.wait(1 / rate_hz)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ingestion workers (more than 1 uses a shared subscription, which "
        "needs a broker that persists it; Debian's Mosquitto 2.0.11 does not)",
    )
    parser.add_argument("--packs-per-second", type=float, default=50.0, help="per gateway")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="urbanpulse-chaos-"))
    scratch.chmod(0o755)  # as root, the database runs as another user who must get in
    database = EmbeddedPostgres(scratch / "pg", port=free_port())
    broker = Mosquitto(scratch / "mqtt")
    workers: list[Worker] = []
    publishers: list[Publisher] = []
    events: list[str] = []
    started = time.monotonic()
    # The gateways' reconnect warnings are the chaos itself; the events list tells the story.
    logging.getLogger("gateway").setLevel(logging.ERROR)

    def note(text: str) -> None:
        events.append(f"{time.monotonic() - started:7.1f}s  {text}")
        print(events[-1], flush=True)

    try:
        url = database.start()
        migrate.upgrade(url, mode="partitioned")
        register(url)
        broker.start()
        group = "chaos" if args.workers > 1 else None
        for index in range(args.workers):
            worker = Worker(index, url, broker.url, scratch, group)
            worker.start()
            workers.append(worker)
        time.sleep(2)
        stop = threading.Event()
        published = [0] * GATEWAYS
        start = float(int(time.time()) - 86400)
        threads = []
        for g in range(GATEWAYS):
            outbox = Outbox(scratch / f"outbox-{g}.sqlite")
            publisher = Publisher(
                outbox,
                PublisherOptions(
                    gateway_id=f"gw-{g}",
                    host=broker.host,
                    port=broker.port,
                    backoff_initial=0.2,
                    backoff_max=2.0,
                ),
            )
            publisher.start()
            publishers.append(publisher)
            thread = threading.Thread(
                target=gateway_loop,
                args=(publisher, g, stop, args.packs_per_second, start, published),
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        note(
            f"publishing: {GATEWAYS} gateways x {args.packs_per_second:g} packs/s x "
            f"{RECORDS_PER_PACK} readings"
        )

        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(5, 15))
            fault = rng.choice(["broker", "database", "worker", "worker"])
            if fault == "broker":
                broker.stop(signal.SIGTERM)
                note("broker stopped")
                time.sleep(rng.uniform(1, 5))
                broker.start()
                note("broker started")
            elif fault == "database":
                database.stop()
                note("database stopped")
                time.sleep(rng.uniform(2, 8))
                database.start()
                note("database started")
            else:
                victim = rng.choice(workers)
                victim.kill()
                note(f"{victim.client_id} killed (SIGKILL)")
                time.sleep(rng.uniform(0.5, 4))
                victim.start()
                note(f"{victim.client_id} restarted")

        stop.set()
        for thread in threads:
            thread.join()
        note("publishing stopped; draining the gateways' outboxes")
        for publisher in publishers:
            publisher.wait_until(lambda h: h.outbox_depth == 0, timeout=120)
        expected = sum(published)
        with psycopg.connect(url) as conn:
            for _ in range(600):
                stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
                conn.commit()
                if stored >= expected:
                    break
                time.sleep(0.2)
            time.sleep(2)
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
            quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]  # type: ignore[index]
            conn.execute("CREATE TEMP TABLE published (sensor text, t double precision)")
            with conn.cursor().copy("COPY published FROM STDIN") as copy:
                for g in range(GATEWAYS):
                    packs = published[g] // RECORDS_PER_PACK
                    for step in range(packs):
                        sensor = step % SENSORS_PER_GATEWAY
                        base = start + (step // SENSORS_PER_GATEWAY) * RECORDS_PER_PACK
                        for i in range(RECORDS_PER_PACK):
                            copy.write_row((f"fdr-{g}-{sensor}", base + i))
            missing = conn.execute(
                "SELECT count(*) FROM published p WHERE NOT EXISTS (SELECT 1 FROM readings r "
                "JOIN sensors s ON s.key = r.sensor_key WHERE s.id = p.sensor "
                "AND r.time = to_timestamp(p.t))"
            ).fetchone()[0]  # type: ignore[index]
            unexpected = stored - (expected - missing)
        faults = len([e for e in events if "stopped" in e or "killed" in e]) - 1
        print(
            f"\nchaos, {args.minutes:g} min, seed {args.seed}, {args.workers} worker(s), "
            f"{faults} faults"
        )
        print(f"{'published':<12}{expected:>10,}")
        print(f"{'stored':<12}{stored:>10,}")
        print(f"{'missing':<12}{missing:>10,}")
        print(f"{'unexpected':<12}{unexpected:>10,}")
        print(f"{'quarantined':<12}{quarantined:>10,}")
        print(
            "RESULT:", "PASS" if missing == 0 and unexpected == 0 and quarantined == 0 else "FAIL"
        )
    finally:
        for publisher in publishers:
            publisher.stop(timeout=5)
            publisher.outbox.close()
        for worker in workers:
            worker.kill()
        broker.close()
        database.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
