"""Chaos, counted: readings published at QoS 1 through real gateways while the broker is killed,
the database stops and starts, and ingestion workers and gateways are killed and restarted at
random moments.

Everything runs on this machine, on loopback, bounded in time: a real PostgreSQL (embedded, with
a data directory that survives its restarts); a real Mosquitto (persistence on; SIGKILLed, so
what it acknowledged since its last autosave is gone) or the embedded rumqttd (which keeps
nothing); gateways that are the project's own outbox + publisher, as processes; and `urbanpulse
ingest` workers as processes. `--no-receipts` runs the platform as it was before receipts (a pack
deleted on PUBACK), to measure what a broker crash cost then. When the chaos window closes,
faults stop, the gateways drain their outboxes, and the script counts:

  published    distinct readings the gateways accepted into their outboxes
  stored       rows in the readings table
  missing      published and not stored (must be 0)
  unexpected   stored and never published (must be 0)
  quarantined  rows in quarantine (must be 0: every reading is valid)

Duplicates cannot reach the table (its key is (sensor, quantity, time)); what the workers absorbed
as redeliveries is visible in their logs. The fault schedule comes from --seed.

    .venv/bin/python bench/chaos.py [--minutes 3] [--seed 1] [--broker mosquitto|embedded]
        [--faults broker,database,worker,gateway] [--no-receipts] [--workers 2]
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
from services.devstack.broker import Mosquitto, Rumqttd
from services.devstack.postgres import EmbeddedPostgres, free_port
from services.storage import migrate

ROOT = Path(__file__).resolve().parent.parent
GATEWAYS = 4
SENSORS_PER_GATEWAY = 10
RECORDS_PER_PACK = 10


class Worker:
    """An `urbanpulse ingest` process that keeps its client id across restarts."""

    def __init__(
        self,
        index: int,
        database_url: str,
        mqtt_url: str,
        logs: Path,
        group: str | None,
        receipts: bool,
    ) -> None:
        self.client_id = f"chaos-ingest-{index}"
        self.group = group
        self.env = {
            **os.environ,
            "URBANPULSE_DATABASE_URL": database_url,
            "URBANPULSE_MQTT_URL": mqtt_url,
            "URBANPULSE_LOG_LEVEL": "WARNING",
            "URBANPULSE_RECEIPTS": "true" if receipts else "false",
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


def pack(gateway: int, step: int, start: float) -> bytes:
    """Pack ``step`` of a gateway: 10 readings of one sensor at times that never repeat."""
    sensor = step % SENSORS_PER_GATEWAY
    base = start + (step // SENSORS_PER_GATEWAY) * RECORDS_PER_PACK
    records = [
        Record(name=f"fdr-{gateway}-{sensor}/voltage", time=base + i, unit="V", value=230.0 + i % 7)
        for i in range(RECORDS_PER_PACK)
    ]
    return encode(records)


def gateway_process(args: argparse.Namespace) -> None:
    """One gateway as its own process, so it can be killed: puts packs at ``--rate`` into its
    outbox and appends each step to its log once the outbox holds it. A restarted gateway goes
    on after the last logged step; a pack put but not logged before a kill is put again, with
    the same readings, so the log counts exactly what the gateway accepted. SIGUSR1: stop
    producing, drain the outbox (every pack receipted, or acknowledged without receipts), exit."""
    logging.getLogger("gateway").setLevel(logging.ERROR)
    steps = Path(args.steps)
    text = steps.read_text() if steps.exists() else ""
    step = int(text.split()[-1]) + 1 if text.split() else 0
    outbox = Outbox(Path(args.outbox))
    publisher = Publisher(
        outbox,
        PublisherOptions(
            gateway_id=f"gw-{args.gateway}",
            host="127.0.0.1",
            port=args.port,
            backoff_initial=0.2,
            backoff_max=2.0,
            receipts=args.receipts,
            receipt_timeout=5.0,
        ),
    )
    draining = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: draining.set())
    # Until now SIGUSR1 would kill us: a gateway restarted just before the drain must say when
    # it can take one.
    steps.with_suffix(".ready").write_text(str(os.getpid()))
    publisher.start()
    with steps.open("a") as log:
        while not draining.is_set():
            publisher.put(pack(args.gateway, step, args.start))
            log.write(f"{step}\n")
            log.flush()
            step += 1
            draining.wait(1 / args.rate)
    drained = publisher.wait_until(lambda h: h.outbox_depth == 0, timeout=240)
    publisher.stop(timeout=5)
    outbox.close()
    sys.exit(0 if drained else 3)


class Gateway:
    """A gateway process that keeps its outbox and step log across kills."""

    def __init__(
        self, index: int, scratch: Path, port: int, start: float, args: argparse.Namespace
    ):
        self.index = index
        self.steps = scratch / f"gw-{index}.steps"
        self.command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--gateway-process",
            str(index),
            "--outbox",
            str(scratch / f"outbox-{index}.sqlite"),
            "--steps",
            str(self.steps),
            "--port",
            str(port),
            "--start",
            repr(start),
            "--rate",
            str(args.packs_per_second),
            *([] if args.receipts else ["--no-receipts"]),
        ]
        self.log = scratch / f"gw-{index}.log"
        self.ready = self.steps.with_suffix(".ready")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=out, stderr=out)

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def drain(self) -> int | None:
        """Stop producing and wait for the outbox to empty; the exit code (0: drained)."""
        if self.process is None:
            return None
        deadline = time.monotonic() + 60
        while not self.ready.exists() and self.process.poll() is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        self.process.send_signal(signal.SIGUSR1)
        try:
            return self.process.wait(300)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def published_steps(self) -> int:
        text = self.steps.read_text() if self.steps.exists() else ""
        return int(text.split()[-1]) + 1 if text.split() else 0


def parse_args() -> argparse.Namespace:
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
    parser.add_argument(
        "--broker",
        choices=["mosquitto", "embedded"],
        default="mosquitto",
        help="mosquitto is SIGKILLed; the embedded rumqttd runs inside this harness's "
        "process and is stopped, which loses all it holds, as a crash does",
    )
    parser.add_argument(
        "--faults",
        default="broker,database,worker,gateway",
        help="comma-separated kinds to draw from (broker, database, worker, gateway)",
    )
    parser.add_argument(
        "--no-receipts",
        dest="receipts",
        action="store_false",
        help="gateways delete a pack on PUBACK and workers send no receipts: the platform "
        "before receipts, to measure what a broker crash cost",
    )
    # The gateway process's own arguments (it is this script, started by the harness).
    parser.add_argument("--gateway-process", dest="gateway", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--outbox", help=argparse.SUPPRESS)
    parser.add_argument("--steps", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.gateway is not None:
        gateway_process(args)
        return
    rng = random.Random(args.seed)
    kinds = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    scratch = Path(tempfile.mkdtemp(prefix="urbanpulse-chaos-"))
    scratch.chmod(0o755)  # as root, the database runs as another user who must get in
    database = EmbeddedPostgres(scratch / "pg", port=free_port())
    broker: Mosquitto | Rumqttd = (
        Mosquitto(scratch / "mqtt") if args.broker == "mosquitto" else Rumqttd(scratch / "mqtt")
    )
    workers: list[Worker] = []
    gateways: list[Gateway] = []
    events: list[str] = []
    started = time.monotonic()

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
            worker = Worker(index, url, broker.url, scratch, group, args.receipts)
            worker.start()
            workers.append(worker)
        time.sleep(2)
        start = float(int(time.time()) - 86400)
        for g in range(GATEWAYS):
            gateway = Gateway(g, scratch, broker.port, start, args)
            gateway.start()
            gateways.append(gateway)
        note(
            f"publishing: {GATEWAYS} gateway processes x {args.packs_per_second:g} packs/s x "
            f"{RECORDS_PER_PACK} readings, {args.broker}, receipts "
            f"{'on' if args.receipts else 'off'}"
        )

        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(5, 15))
            fault = rng.choice(kinds)
            if fault == "broker":
                if isinstance(broker, Mosquitto):
                    broker.stop(signal.SIGKILL)
                    note("broker killed (SIGKILL)")
                else:
                    broker.stop()
                    note("broker stopped (rumqttd keeps nothing: a crash)")
                time.sleep(rng.uniform(1, 5))
                broker.start()
                note("broker started")
            elif fault == "database":
                database.stop()
                note("database stopped")
                time.sleep(rng.uniform(2, 8))
                database.start()
                note("database started")
            elif fault == "worker":
                victim = rng.choice(workers)
                victim.kill()
                note(f"{victim.client_id} killed (SIGKILL)")
                time.sleep(rng.uniform(0.5, 4))
                victim.start()
                note(f"{victim.client_id} restarted")
            else:
                gateway = rng.choice(gateways)
                gateway.kill()
                note(f"gw-{gateway.index} killed (SIGKILL)")
                time.sleep(rng.uniform(0.5, 4))
                gateway.start()
                note(f"gw-{gateway.index} restarted")

        note("publishing stopped; draining the gateways' outboxes")
        undrained = [g.index for g in gateways if g.drain() != 0]
        if undrained:
            note(f"gateways that did not drain: {undrained}")
        published = [g.published_steps() * RECORDS_PER_PACK for g in gateways]
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
                for g, gateway in enumerate(gateways):
                    for step in range(gateway.published_steps()):
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
        faults = {kind: sum(1 for e in events if kind_of(e) == kind) for kind in kinds}
        print(
            f"\nchaos, {args.minutes:g} min, seed {args.seed}, {args.broker}, receipts "
            f"{'on' if args.receipts else 'off'}, {args.workers} worker(s), faults "
            + ", ".join(f"{kind} {count}" for kind, count in faults.items())
        )
        print(f"{'published':<12}{expected:>10,}")
        print(f"{'stored':<12}{stored:>10,}")
        print(f"{'missing':<12}{missing:>10,}")
        print(f"{'unexpected':<12}{unexpected:>10,}")
        print(f"{'quarantined':<12}{quarantined:>10,}")
        passed = missing == 0 and unexpected == 0 and quarantined == 0 and not undrained
        print("RESULT:", "PASS" if passed else "FAIL")
    finally:
        for gateway in gateways:
            gateway.kill()
        for worker in workers:
            worker.kill()
        broker.close()
        database.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def kind_of(event: str) -> str | None:
    """The fault kind an event line records (its start, not its recovery)."""
    if "broker killed" in event or "broker stopped" in event:
        return "broker"
    if "database stopped" in event:
        return "database"
    if "chaos-ingest" in event and "killed" in event:
        return "worker"
    if event.split()[1].startswith("gw-") and "killed" in event:
        return "gateway"
    return None


if __name__ == "__main__":
    main()
