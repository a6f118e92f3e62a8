"""Ingestion end to end (MQTT -> worker -> PostgreSQL) against its baselines, in one run.

One ingestion worker (``python -m services.cli ingest``, its own process) reads SenML packs of
feeder-meter voltages (2,000 sensors under one gateway, QoS 1) from a real Mosquitto and lands
them in a real PostgreSQL (durable: fsync and synchronous_commit on). Publishers are separate
processes (MQTT 5, QoS 1, 1,000 in flight, each pack numbered in a user property as a gateway
numbers it, so the worker takes the pack-ledger path and sends receipts; payloads and
properties built before the clock starts), so neither shares a GIL with the worker. The
end-to-end load comes by default from a lean generator (``--publisher lean``: packets written
by the mqtt5 codec, sent on a plain socket), because gateways run on their own machines and
paho's send path, on the same 2 cores, costs about as much CPU per reading as the worker at
small packs; ``--publisher paho`` publishes through paho clients as the gateways do. The
latency, broker-only and naive parts always use paho. Measured:

  end to end       readings/s for packs of 1, 10 and 100: publish start to last row committed.
                   Done is when the last pack of every publisher is visible (one primary-key
                   lookup every 20 ms; the worker commits in arrival order) and then
                   ``count(*)`` says every reading is there. The publishers' own rate (start to
                   last PUBACK) is printed beside it: if it is not well above, they were the bound.
  database only    ReadingWriter.write of the same rows, pre-built, at the worker's batch size,
                   one commit a batch: the idempotent path (staging COPY + INSERT ... ON
                   CONFLICT) and the direct COPY, each also fed the same rows again (all
                   duplicates); and a plain binary COPY into an empty table without a key.
  broker only      the same payloads to a no-op paho subscriber (MQTT 5, QoS 1).
  naive            bench/naive_ingestor.py (paho callback, json.loads, one INSERT per reading,
                   autocommit) on a smaller load.
  latency          packs of 100 paced at a steady rate; each pack's SenML time is its publish
                   wall-clock time and it carries one record of a marker sensor; a poller reads
                   the marker's new rows every 20 ms: latency = first seen - record time
                   (over-estimates by 0-20 ms plus one query). Receipt lag: the publisher
                   listens on the gateway's down topic; lag = receipt arrival - publish.
  CPU              user + system CPU per reading stored, end to end, of the worker, the
                   PostgreSQL server's processes, the broker and the publishers (/proc): on a
                   machine shared with other work the rates move with the neighbours' load,
                   the CPU per reading much less, and it says which side bounds the rate.
  memory           the worker's resident memory (VmRSS sampled every 100 ms, VmHWM) during the
                   run, and before/during/after a database outage (PostgreSQL stopped while a
                   steady publisher goes on, then started again on the same data directory),
                   counting that every reading published arrived.

    .venv/bin/python bench/bench_ingest.py [--quick] [--readings 1000000] [--profile DIR]
        [--profile-gil] [--workers 1] [--end-to-end-only] [--database-url URL] [--mqtt-url URL]

``--workers N`` runs N worker processes on one shared subscription (the CPU figures are their
sum; memory and the profile are the first's). With more than one, arrival order no longer says
when the last reading is in, so the end is when the pack ledger holds every pack (counted every
20 ms; a pack's ledger row commits with its readings), confirmed by ``count(*)``.
``--end-to-end-only`` stops after the end-to-end runs (for iterating on the worker).

Without URLs (or URBANPULSE_BENCH_DATABASE_URL / URBANPULSE_BENCH_MQTT_URL) it starts an
embedded PostgreSQL with the durable settings of `urbanpulse up` and Mosquitto with the
settings we ship; the outage part needs the embedded server (it stops and starts it).
Targets are printed with PASS/FAIL; the script always exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mqtt5
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import topics
from gateway.kinds import QUANTITIES
from gateway.receipts import PackId, Receipt, decode_receipt
from gateway.senml import Record, encode
from services.devstack.broker import Mosquitto
from services.devstack.postgres import EmbeddedPostgres, free_port
from services.ingest.session import packet_size
from services.settings import IngestSettings
from services.storage import migrate
from services.storage.urls import libpq_url, with_database
from services.storage.writer import Reading, ReadingWriter, encode_copy

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = "gw-bench"
SENSORS = 2000
MARKER = SENSORS  # index of the extra sensor that tags latency packs
# How far behind the newest marker row the latency poller looks again: well above how far
# apart two workers commit (a batch or two, tens of milliseconds at the latency run's rate).
LOOK_BACK_S = 2.0
VOLTAGE = QUANTITIES["voltage"].key
Conn = psycopg.Connection[tuple[Any, ...]]
SPAWN = multiprocessing.get_context("spawn")  # children share nothing with our connections


def sensor_id(index: int) -> str:
    return f"fdr-{index:05d}"


def reading(i: int, t0: float) -> tuple[int, float, float]:
    """Reading ``i`` of a load: (sensor index, time, value). Each sensor reports once a second."""
    return i % SENSORS, t0 + i // SENSORS, 220.0 + (i % 200) / 10


# -- child processes -------------------------------------------------------------------------


class Mqtt5Publisher:
    """A paho-mqtt MQTT 5 client publishing numbered packs as a gateway does (user properties
    ``seq``, ``stream``, ``oldest`` of :mod:`gateway.receipts`), at most ``window`` QoS 1
    messages in flight. The PUBLISH properties and payloads are built before the clock starts,
    so the run measures paho's send path, not SenML encoding. Receipts on the gateway's down
    topic are collected with their arrival time.
    """

    def __init__(self, mqtt_url: str, client_id: str, window: int = 1000) -> None:
        url = urlsplit(mqtt_url)
        self.stream = uuid.uuid4().hex
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(window)
        self.client.max_queued_messages_set(0)  # paho queues beyond the window, unbounded
        self.acked = 0
        self.receipts: list[tuple[float, Receipt]] = []
        self._changed = threading.Condition()
        self._connected = threading.Event()
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=60)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"no CONNACK from {mqtt_url}")

    def _on_publish(self, *_: object) -> None:
        with self._changed:
            self.acked += 1
            self._changed.notify_all()

    def _on_message(self, _client: object, _userdata: object, message: Any) -> None:
        receipt = decode_receipt(message.payload)
        if receipt is not None and receipt.stream == self.stream:
            self.receipts.append((time.time(), receipt))

    def listen_for_receipts(self, gateway: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topics.down_topic(gateway), qos=1)
        if not done.wait(10):
            raise RuntimeError("no SUBACK for the receipts topic")

    def properties(self, seq: int) -> Properties:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = PackId(self.stream, seq, 1).properties()
        return properties

    def send(self, topic: str, packets: list[tuple[bytes, Properties]]) -> None:
        for payload, properties in packets:
            self.client.publish(topic, payload, qos=1, properties=properties)

    def wait_acked(self, count: int) -> None:
        with self._changed:
            while self.acked < count:
                self._changed.wait()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pack_payload(pack: int, first_reading: int, t0: float) -> bytes:
    records = []
    for i in range(first_reading, first_reading + pack):
        s, t, v = reading(i, t0)
        records.append(Record(name=f"{sensor_id(s)}/voltage", time=t, unit="V", value=v))
    return encode(records)


def publish_load(
    mqtt_url: str,
    topic: str,
    pack: int,
    first: int,
    count: int,
    t0: float,
    start: Any,
    out: Any,
) -> None:
    """Publish packs ``first .. first+count-1`` of a load as fast as the window allows."""
    client = Mqtt5Publisher(mqtt_url, f"bench-pub-{uuid.uuid4().hex[:8]}")
    packets = [
        (pack_payload(pack, j * pack, t0), client.properties(k + 1))
        for k, j in enumerate(range(first, first + count))
    ]
    out.put(("ready", count * pack))
    start.wait()
    began, cpu = time.time(), time.process_time()
    client.send(topic, packets)
    client.wait_acked(len(packets))
    out.put(("done", began, time.time(), time.process_time() - cpu))
    client.close()


def publish_load_lean(
    mqtt_url: str,
    topic: str,
    pack: int,
    first: int,
    count: int,
    t0: float,
    start: Any,
    out: Any,
) -> None:
    """The load of :func:`publish_load` from a cheaper generator: the same packs and pack
    identities, their PUBLISH packets written by the ``mqtt5`` codec before the clock starts
    and sent over one plain socket, QoS 1, at most 1,000 unacknowledged (or the broker's
    receive maximum), each PUBACK read and checked. Gateways run on their own machines; here
    the load shares the worker's 2 cores, and paho's send path costs about as much CPU per
    reading as the worker does at small packs, so this is the platform's rate with the load's
    cost taken mostly out of the way (``--publisher paho`` keeps paho)."""
    url = urlsplit(mqtt_url)
    stream = uuid.uuid4().hex
    packets = [
        mqtt5.PublishPacket(
            topic,
            pack_payload(pack, j * pack, t0),
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            packet_id=k % 65535 + 1,  # reused only after its PUBACK: the window is smaller
            user_properties=PackId(stream, k + 1, 1).properties(),
        ).write()
        for k, j in enumerate(range(first, first + count))
    ]
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 1883), 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mqtt5.ConnectPacket(f"bench-lean-{stream[:8]}", keep_alive=0).write())
    received = bytearray()

    def read_packets() -> list[Any]:
        data = sock.recv(1 << 20)
        if not data:
            raise RuntimeError("the broker closed the connection")
        received.extend(data)
        packets_read, offset = [], 0
        while (size := packet_size(received, offset)) is not None and len(
            received
        ) >= offset + size:
            packets_read.append(mqtt5.read(memoryview(received)[offset : offset + size])[0])
            offset += size
        del received[:offset]
        return packets_read

    connack: list[Any] = []
    while not connack:
        connack = read_packets()
    if not isinstance(connack[0], mqtt5.ConnAckPacket) or connack[0].reason_code.value:
        raise RuntimeError(f"the broker refused the load generator: {connack[0]}")
    window = min(1000, connack[0].receive_max)
    out.put(("ready", count * pack))
    start.wait()
    began, cpu = time.time(), time.process_time()
    sent = acked = 0
    while acked < len(packets):
        if sent < len(packets) and sent - acked < window:
            end = min(len(packets), acked + window)
            sock.sendall(b"".join(packets[sent:end]))
            sent = end
        for packet in read_packets():
            if not isinstance(packet, mqtt5.PubAckPacket) or packet.reason_code.value >= 0x80:
                raise RuntimeError(f"the broker answered {packet}")
            acked += 1
    out.put(("done", began, time.time(), time.process_time() - cpu))
    sock.sendall(mqtt5.DisconnectPacket().write())
    sock.close()


def publish_paced(
    mqtt_url: str,
    topic: str,
    rate: float,
    seconds: float,
    pack: int,
    marker: bool,
    start: Any,
    out: Any,
) -> None:
    """Publish packs of ``pack`` readings at ``rate`` readings/s, timed at publish (wall clock);
    report each pack's receipt lag (its receipt's arrival - its publish)."""
    interval = pack / rate
    total = round(seconds * rate / pack)
    names = [f"{sensor_id(s)}/voltage" for s in range(SENSORS + 1)]
    client = Mqtt5Publisher(mqtt_url, f"bench-paced-{uuid.uuid4().hex[:8]}")
    client.listen_for_receipts(GATEWAY)
    sent_at: dict[int, float] = {}
    out.put(("ready", total * pack))
    start.wait()
    began = last = time.time()
    behind = 0.0
    rotate = 0
    for j in range(total):
        due = began + j * interval
        now = time.time()
        if now < due:
            time.sleep(due - now)
        behind = max(behind, time.time() - due)
        t = max(time.time(), last + 1e-5)  # a pack's time is unique, so its rows are new
        last = t
        records = [Record(name=names[MARKER], time=t, unit="V", value=230.0)] if marker else []
        while len(records) < pack:
            records.append(Record(name=names[rotate], time=t, unit="V", value=229.0))
            rotate = (rotate + 1) % SENSORS
        sent_at[j + 1] = time.time()
        client.send(topic, [(encode(records), client.properties(j + 1))])
    client.wait_acked(total)
    deadline = time.time() + 30
    while (
        time.time() < deadline
        and sum(1 for _, r in list(client.receipts) for _ in r.seqs()) < total
    ):
        time.sleep(0.05)
    lags: dict[int, float] = {}
    for arrived, receipt in client.receipts:
        for seq in receipt.seqs():
            if seq in sent_at and seq not in lags:
                lags[seq] = arrived - sent_at[seq]
    out.put(("done", began, time.time(), behind, list(lags.values())))
    client.close()


def noop_subscriber(mqtt_url: str, topic_filter: str, expected: int, _start: Any, out: Any) -> None:
    """paho-mqtt, MQTT 5, QoS 1: count each PUBLISH (paho acknowledges it) and nothing else."""
    url = urlsplit(mqtt_url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-noop-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    received = 0
    ended = time.time()
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(*_: object) -> None:
        nonlocal received, ended
        received += 1
        ended = time.time()
        if received >= expected:
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=60)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK")
    out.put(("ready", 0))
    done.wait(300)
    out.put(("done", ended, received))
    client.disconnect()
    client.loop_stop()


@dataclass
class Children:
    """Child processes started together, released together, results collected."""

    out: Any = field(default_factory=SPAWN.Queue)
    start: Any = field(default_factory=SPAWN.Event)
    processes: list[Any] = field(default_factory=list)
    readings: int = 0

    def spawn(self, target: Callable[..., None], *args: object) -> None:
        process = SPAWN.Process(target=target, args=(*args, self.start, self.out), daemon=True)
        process.start()
        self.processes.append(process)

    def ready(self) -> None:
        waiting, deadline = len(self.processes), time.monotonic() + 120
        while waiting:
            try:
                kind, readings = self.out.get(timeout=1)
            except queue.Empty:
                if time.monotonic() > deadline or not all(p.is_alive() for p in self.processes):
                    raise RuntimeError("a child process did not start") from None
                continue
            assert kind == "ready"
            self.readings += readings
            waiting -= 1

    def results(self, timeout: float = 600) -> list[tuple[Any, ...]]:
        got = [self.out.get(timeout=timeout) for _ in self.processes]
        for process in self.processes:
            process.join(10)
        return [r[1:] for r in got]


# -- the worker process ------------------------------------------------------------------------


class Worker:
    def __init__(
        self, database_url: str, mqtt_url: str, batch: int, flush_ms: float, log: Path, group: str
    ) -> None:
        env = dict(os.environ)
        env.update(
            URBANPULSE_DATABASE_URL=database_url,
            URBANPULSE_MQTT_URL=mqtt_url,
            URBANPULSE_ENV_FILE="/nonexistent",
            URBANPULSE_LOG_LEVEL="INFO",
        )
        self.log = log
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "ingest",
                    "--client-id",
                    f"bench-ingest-{uuid.uuid4().hex[:6]}",
                    "--group",
                    group,
                    "--batch-records",
                    str(batch),
                    "--flush-ms",
                    str(flush_ms),
                    # None: another worker on this shared machine may hold the default port.
                    "--metrics-port",
                    "0",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while b"ingesting" not in log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        time.sleep(0.3)  # the subscription is acknowledged before on_ready; settle anyway

    def memory_kib(self, field_name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RssSampler:
    """Samples the worker's VmRSS every 100 ms under a phase label."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.phase = "run"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                rss = self.worker.memory_kib("VmRSS")
            except OSError:
                return
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """CPU seconds (user + system) of the worker, the PostgreSQL server's processes and the
    broker.

    On a machine shared with other work, wall-clock rates move with the neighbours' load; the
    CPU each side spends per reading moves much less, and says which side bounds the rate."""

    _TICK = os.sysconf("SC_CLK_TCK")

    def __init__(
        self, workers: list[Worker], pg: EmbeddedPostgres | None, broker: Mosquitto | None
    ) -> None:
        self.worker_pids = [worker.process.pid for worker in workers]
        self.postmaster = self.broker = None
        if pg is not None:
            self.postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        if broker is not None:
            self.broker = int(broker.pid_file.read_text().split()[0])

    @classmethod
    def _stat(cls, pid: int) -> tuple[int, float]:
        """(parent pid, CPU seconds) of ``pid``."""
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / cls._TICK

    def read(self) -> tuple[float, float, float]:
        """(workers, PostgreSQL, broker) CPU seconds so far. A backend that exited since the
        last read takes its share with it: the worker's connections and the server's own
        processes stay."""
        worker = sum(self._stat(pid)[1] for pid in self.worker_pids)
        server = 0.0
        if self.postmaster is not None:
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                with suppress(OSError, IndexError, ValueError):
                    parent, seconds = self._stat(int(entry.name))
                    if parent == self.postmaster or int(entry.name) == self.postmaster:
                        server += seconds
        broker = self._stat(self.broker)[1] if self.broker is not None else 0.0
        return worker, server, broker


# -- database helpers --------------------------------------------------------------------------


def connect(url: str) -> Conn:
    return psycopg.connect(libpq_url(url), autocommit=True)


def scalar(conn: Conn, sql: str, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def reset(conn: Conn) -> None:
    conn.execute("TRUNCATE readings, rollup_invalidations, pack_ledger")
    conn.execute("CHECKPOINT")  # every variant starts with no checkpoint debt


def setup_database(server: str, t0: float) -> tuple[str, dict[int, int]]:
    """A fresh migrated database with the gateway and sensors; returns (url, index -> key)."""
    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    with connect(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    migrate.upgrade(url, mode="partitioned")
    keys: dict[int, int] = {}
    with connect(url) as conn:
        conn.execute("INSERT INTO gateways (id) VALUES (%s)", (GATEWAY,))
        with conn.cursor() as cur:
            for s in range(SENSORS + 1):
                cur.execute(
                    "INSERT INTO sensors (id, kind, domain, gateway_id) "
                    "VALUES (%s, 'feeder_meter', 'energy', %s) RETURNING key",
                    (sensor_id(s), GATEWAY),
                )
                keys[s] = scalar_row(cur.fetchone())
        with connect(url) as writer_conn:  # create the partitions every variant writes into
            writer = ReadingWriter(writer_conn, "partitioned")
            writer.write(
                [(t0 - 60, keys[0], VOLTAGE, 0.0), (time.time() + 900, keys[0], VOLTAGE, 0.0)]
            )
            writer_conn.commit()
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(
            "CREATE TABLE unkeyed (time timestamptz, sensor_key int4, "
            "quantity_key int2, value float8)"
        )
        reset(conn)
    return url, keys


def scalar_row(row: tuple[Any, ...] | None) -> int:
    assert row is not None
    return int(row[0])


def wait_stored(
    conn: Conn, lasts: list[tuple[int, float]], expected: int, packs: int, timeout: float = 300
) -> tuple[float, int]:
    """(when every reading was visible, count): last packs first; then, as several workers
    commit out of order, the pack ledger (a pack's row commits with its readings, and counting
    a run's few thousand rows is cheap enough to do every 20 ms); then count(*) to be sure."""
    deadline = time.time() + timeout
    pending = list(lasts)
    while pending and time.time() < deadline:
        pending = [
            (key, t)
            for key, t in pending
            if not scalar(
                conn,
                "SELECT count(*) FROM readings WHERE sensor_key = %s AND quantity_key = %s "
                "AND time >= to_timestamp(%s)",
                (key, VOLTAGE, t - 0.0005),
            )
        ]
        if pending:
            time.sleep(0.02)
    while int(scalar(conn, "SELECT count(*) FROM pack_ledger")) < packs:
        if time.time() > deadline:
            break
        time.sleep(0.02)
    seen = time.time()
    count = int(scalar(conn, "SELECT count(*) FROM readings"))
    while count < expected and time.time() < deadline:
        time.sleep(0.2)
        count = int(scalar(conn, "SELECT count(*) FROM readings"))
        seen = time.time()
    return seen, count


@contextmanager
def profiled(
    directory: Path | None, worker: Worker, name: str, *, gil: bool = False
) -> Iterator[None]:
    """py-spy on the worker (when asked for and installed) around a block.

    ``gil``: sample only the thread holding the GIL. The worker's threads share one GIL, so a
    plain profile also counts a thread waiting for it as busy in whatever frame it stopped;
    this one attributes the process's Python CPU (C code that releases the GIL, such as
    libpq waiting for the server, is left out)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if directory is None or not Path(spy).exists():
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(worker.process.pid),
            "--format",
            "raw",
            "--threads",
            "--rate",
            "200",
            *(["--gil"] if gil else []),
            "-o",
            str(directory / f"{name}{'_gil' if gil else ''}.folded"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(2)
        process.wait(30)


# -- the variants ------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    pack: int
    readings: int
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0


def end_to_end(
    url: str,
    mqtt_url: str,
    keys: dict[int, int],
    pack: int,
    readings: int,
    publishers: int,
    t0: float,
    meter: CpuMeter,
    workers: int = 1,
    lean: bool = True,
) -> tuple[Row, Row, str]:
    """The end-to-end row, the publishers' row, and the CPU each side spent per reading."""
    packs = readings // pack
    children = Children()
    share = -(-packs // publishers)
    lasts = []
    for k in range(publishers):
        first, count = k * share, min(share, packs - k * share)
        if count <= 0:
            continue
        load = publish_load_lean if lean else publish_load
        children.spawn(load, mqtt_url, topics.up_topic(GATEWAY), pack, first, count, t0)
        s, t, _ = reading((first + count) * pack - 1, t0)
        lasts.append((keys[s], t))
    children.ready()
    with connect(url) as conn:
        reset(conn)
        before = meter.read()
        began = time.time()
        children.start.set()
        done, count = wait_stored(conn, lasts, children.readings, packs)
        after = meter.read()
    results = children.results()
    published = max(r[1] for r in results) - began
    # Their CPU (paho's send path and PUBACK handling) is taken from the same 2 cores.
    cpu = sum(r[2] for r in results)
    if count != children.readings:
        print(f"  ! packs of {pack}: {count:,} of {children.readings:,} readings stored")
    e2e = Row(f"end to end, {workers} worker{'s' if workers > 1 else ''}", pack, count, packs,
              done - began)  # fmt: skip
    name = f"  publishers alone (start to last PUBACK; their CPU {cpu:.1f} s)"
    worker_us, server_us, broker_us = (
        (a - b) * 1e6 / max(count, 1) for a, b in zip(after, before, strict=True)
    )
    spent = (
        f"packs of {pack}: worker{'s' if workers > 1 else ''} {worker_us:.1f} µs, "
        f"PostgreSQL {server_us:.1f} µs (the "
        f"bench's polling included), broker {broker_us:.1f} µs, publishers "
        f"{cpu * 1e6 / max(count, 1):.1f} µs"
    )
    return e2e, Row(name, pack, readings, packs, published), spent


def database_only(url: str, rows: list[Reading], batch: int) -> list[Row]:
    """The worker's database work on pre-built rows, one commit a batch, live-stream event on
    (the default): the idempotent path (staging COPY + INSERT ... ON CONFLICT) and the direct
    COPY the worker uses since the pack ledger, each then fed the same rows again (a replayed
    load: all duplicates); and a plain binary COPY into an empty unkeyed table."""
    parts = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    result = []
    with psycopg.connect(libpq_url(url)) as conn:
        for direct, name in ((False, "idempotent (staging + ON CONFLICT)"), (True, "direct COPY")):
            with connect(url) as other:
                reset(other)
            conn.execute("CHECKPOINT")
            conn.commit()
            writer = ReadingWriter(conn, "partitioned", live_events=True, direct=direct)
            for label in ("", ", all duplicates"):
                began = time.perf_counter()
                for part in parts:
                    writer.write(part)
                    conn.commit()
                seconds = time.perf_counter() - began
                title = f"database only: {name}{label}, batch {batch:,}"
                result.append(Row(title, 0, len(rows), 0, seconds))
        conn.execute("TRUNCATE unkeyed")
        conn.execute("CHECKPOINT")
        conn.commit()
        began = time.perf_counter()
        for part in parts:
            with conn.cursor().copy(
                "COPY unkeyed (time, sensor_key, quantity_key, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(encode_copy(part))
            conn.commit()
        plain = time.perf_counter() - began
    title = f"database only: plain binary COPY, unkeyed, batch {batch:,}"
    return [*result, Row(title, 0, len(rows), 0, plain)]


def broker_only(mqtt_url: str, pack: int, readings: int, t0: float) -> Row:
    packs = readings // pack
    subscriber = Children()
    subscriber.spawn(noop_subscriber, mqtt_url, "bench/noop/+/up", packs)
    subscriber.ready()
    publisher = Children()
    publisher.spawn(publish_load, mqtt_url, f"bench/noop/{GATEWAY}/up", pack, 0, packs, t0)
    publisher.ready()
    began = time.time()
    publisher.start.set()
    publisher.results()
    ((ended, received),) = subscriber.results()
    return Row("broker only: no-op subscriber", pack, received * pack, received, ended - began)


def naive(url: str, mqtt_url: str, readings: int, t0: float, log: Path, timeout: float) -> Row:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "naive_ingestor.py"),
            "--database-url",
            libpq_url(url),
            "--mqtt-url",
            mqtt_url,
            "--topic",
            "naive/ssc/v1/+/up",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the naive ingestor did not start: {log.read_text()[-2000:]}")
        pack = 100
        children = Children()
        children.spawn(
            publish_load, mqtt_url, f"naive/ssc/v1/{GATEWAY}/up", pack, 0, readings // pack, t0
        )
        children.ready()
        with connect(url) as conn:
            reset(conn)
            began = time.time()
            children.start.set()
            count = 0
            while count < children.readings and time.time() - began < timeout:
                time.sleep(0.05)
                count = int(scalar(conn, "SELECT count(*) FROM readings"))
            ended = time.time()
        children.results()
        name = "naive ingestor (json.loads, INSERT/reading, autocommit)"
        if count < children.readings:
            name += f", cut at {timeout:.0f} s"
        return Row(name, pack, count, count // pack, ended - began)
    finally:
        process.terminate()
        process.wait(10)


def latency(
    url: str, mqtt_url: str, keys: dict[int, int], rate: float, seconds: float
) -> tuple[list[float], int, float, float, list[float]]:
    """Latencies (s) of the marker rows, packs published, worst publisher lag, achieved rate,
    receipt lags (s)."""
    children = Children()
    children.spawn(publish_paced, mqtt_url, topics.up_topic(GATEWAY), rate, seconds, 100, True)
    children.ready()
    packs = children.readings // 100
    seen: dict[float, float] = {}  # a marker row's time -> its latency
    with connect(url) as conn:
        reset(conn)
        since = time.time() - 1
        children.start.set()
        deadline = time.time() + seconds + 60
        while len(seen) < packs and time.time() < deadline:
            # Several workers commit out of record-time order: look back LOOK_BACK_S behind
            # the newest row seen, so that an older row committed later is still found once.
            rows = conn.execute(
                "SELECT extract(epoch FROM time)::float8 FROM readings WHERE sensor_key = %s "
                "AND quantity_key = %s AND time > to_timestamp(%s) ORDER BY time",
                (keys[MARKER], VOLTAGE, since - LOOK_BACK_S),
            ).fetchall()
            now = time.time()
            for (t,) in rows:
                if t not in seen:
                    seen[t] = now - t
                since = max(since, t)
            time.sleep(0.02)
    ((began, ended, behind, receipt_lags),) = children.results()
    return list(seen.values()), packs, behind, children.readings / (ended - began), receipt_lags


def outage(
    url: str,
    mqtt_url: str,
    pg: EmbeddedPostgres,
    worker: Worker,
    sampler: RssSampler,
    down_s: float,
    rate: float,
) -> dict[str, Any]:
    before_s, after_s = 5.0, 10.0
    with connect(url) as conn:
        reset(conn)
    children = Children()
    children.spawn(
        publish_paced,
        mqtt_url,
        topics.up_topic(GATEWAY),
        rate,
        before_s + down_s + after_s,
        100,
        False,
    )
    children.ready()
    sampler.phase = "before"
    children.start.set()
    time.sleep(before_s)
    with connect(url) as conn:
        at_stop = int(scalar(conn, "SELECT count(*) FROM readings"))
    sampler.phase = "during"
    stopped = time.time()
    pg.stop()
    time.sleep(max(0.0, down_s - (time.time() - stopped)))
    pg.start()
    restarted = time.time()
    sampler.phase = "after"
    count, resumed, published_end = at_stop, None, None
    while time.time() - restarted < 120:
        try:
            with connect(url) as conn:
                count = int(scalar(conn, "SELECT count(*) FROM readings"))
        except psycopg.OperationalError:
            pass
        if resumed is None and count > at_stop:
            resumed = time.time()
        if published_end is None:
            with suppress(queue.Empty):
                published_end = children.out.get_nowait()[2]
        if published_end is not None and count >= children.readings:
            break
        time.sleep(0.1)
    drained = time.time()
    for process in children.processes:
        process.join(10)
    sampler.phase = "end"
    return {
        "published": children.readings,
        "stored": count,
        "down": restarted - stopped,
        "resumed": (resumed or drained) - restarted,
        "drained": drained - (published_end or drained),
    }


# -- main --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tuning = IngestSettings.defaults()  # the worker's own defaults (URBANPULSE_INGEST_*)
    parser.add_argument("--quick", action="store_true", help="a fifth of the load, shorter phases")
    parser.add_argument("--readings", type=int, help="packs-of-100 load (default 1,000,000)")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument(
        "--publisher",
        choices=("lean", "paho"),
        default="lean",
        help="the end-to-end load: packets written by the mqtt5 codec on a plain socket "
        "(default), or paho clients as gateways publish",
    )
    parser.add_argument(
        "--batch-records", type=int, default=tuning.batch_records, help="the worker's batch cap"
    )
    parser.add_argument(
        "--flush-ms", type=float, default=tuning.flush_ms, help="the worker's flush time"
    )
    parser.add_argument("--naive-readings", type=int, help="naive ingestor load (default 20,000)")
    parser.add_argument("--latency-rate", type=float, default=20_000.0, help="readings/s")
    parser.add_argument("--latency-seconds", type=float, help="default 20")
    parser.add_argument("--outage-seconds", type=float, help="database down (default 10)")
    parser.add_argument("--outage-rate", type=float, default=10_000.0, help="readings/s")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on one shared subscription (memory, profile: the first's)",
    )
    parser.add_argument(
        "--end-to-end-only", action="store_true", help="stop after the end-to-end runs"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the worker here (each pack size)")
    parser.add_argument(
        "--profile-gil", action="store_true", help="profile only the thread holding the GIL"
    )
    parser.add_argument("--database-url", default=os.environ.get("URBANPULSE_BENCH_DATABASE_URL"))
    parser.add_argument("--mqtt-url", default=os.environ.get("URBANPULSE_BENCH_MQTT_URL"))
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    big = args.readings or int(1_000_000 * scale)
    loads = {100: big, 10: big * 3 // 10 // 10 * 10, 1: big * 6 // 100}
    naive_readings = args.naive_readings or (5000 if args.quick else 20_000)
    latency_s = args.latency_seconds or (8.0 if args.quick else 20.0)
    outage_s = args.outage_seconds or (5.0 if args.quick else 10.0)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up on kill too
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    scratch.chmod(0o755)  # as root the server runs as another user, who must get through
    pg = broker = worker = sampler = None
    workers: list[Worker] = []
    try:
        server = args.database_url
        if not server:
            pg = EmbeddedPostgres(scratch / "pg", port=free_port())  # a port kept across restarts
            server = pg.start()
        mqtt_url = args.mqtt_url
        if not mqtt_url:
            broker = Mosquitto(scratch / "mqtt")
            broker.start()
            mqtt_url = broker.url
        t0 = float(int(time.time()) - 3 * 3600)
        url, keys = setup_database(server, t0)
        group = f"bench{uuid.uuid4().hex[:6]}"
        for n in range(args.workers):
            log = scratch / f"worker{n or ''}.log"
            workers.append(Worker(url, mqtt_url, args.batch_records, args.flush_ms, log, group))
        worker = workers[0]
        sampler = RssSampler(worker)
        idle_rss = worker.memory_kib("VmRSS")
        table: list[Row] = []
        e2e: dict[int, Row] = {}
        meter = CpuMeter(workers, pg, broker)
        cpu_lines: list[str] = []
        for pack in (1, 10, 100):
            if pack == 100:
                with connect(url) as conn:
                    conn.execute("SELECT pg_stat_statements_reset()")
            with profiled(args.profile, worker, f"worker_pack{pack}", gil=args.profile_gil):
                row, publisher, spent = end_to_end(
                    url, mqtt_url, keys, pack, loads[pack], args.publishers, t0, meter,
                    args.workers, lean=args.publisher == "lean",
                )  # fmt: skip
            e2e[pack] = row
            cpu_lines.append(spent)
            table += [row, publisher]
        if args.end_to_end_only:
            print(f"\nend to end only: {args.workers} worker process(es), {args.publishers} "
                  f"{args.publisher} publishers; {os.cpu_count()} CPUs")  # fmt: skip
            for r in table:
                print(f"{r.name:<76}{r.pack:>5}{r.readings:>11,}{r.seconds:>9.2f}{r.rate:>12,.0f}")
            for line in cpu_lines:
                print(f"  {line}")
            return
        statements = []
        with connect(url) as conn:
            statements = conn.execute(
                "SELECT calls, round(total_exec_time)::int, left(regexp_replace(query, "
                "'\\s+', ' ', 'g'), 70) FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "ORDER BY total_exec_time DESC LIMIT 5"
            ).fetchall()
        run_hwm = worker.memory_kib("VmHWM")
        rows: list[Reading] = []
        for i in range(loads[100]):
            s, t, v = reading(i, t0)
            rows.append((t, keys[s], VOLTAGE, v))
        database_rows = database_only(url, rows, args.batch_records)
        del rows
        idempotent, plain = database_rows[0], database_rows[-1]
        table += database_rows
        for pack in (1, 10, 100):
            table.append(broker_only(mqtt_url, pack, loads[pack], t0))
        naive_row = naive(url, mqtt_url, naive_readings, t0, scratch / "naive.log", 120)
        table.append(naive_row)
        lat, lat_packs, behind, lat_rate, receipt_lags = latency(
            url, mqtt_url, keys, args.latency_rate, latency_s
        )
        down = None
        if pg is not None:
            down = outage(url, mqtt_url, pg, worker, sampler, outage_s, args.outage_rate)
        final_hwm = worker.memory_kib("VmHWM")
        alive = worker.process.poll() is None

        # -- report ----------------------------------------------------------------------------
        version = ""
        with connect(url) as conn:
            version = str(scalar(conn, "SHOW server_version"))
            sync = f"fsync {scalar(conn, 'SHOW fsync')}, synchronous_commit " + str(
                scalar(conn, "SHOW synchronous_commit")
            )
        print(
            f"\ningest bench: {SENSORS:,} feeder meters, 1 gateway, QoS 1; PostgreSQL {version} "
            f"({'embedded' if pg else 'given'}, {sync}), "
            f"{'Mosquitto (embedded, shipped settings)' if broker else 'given broker'}; "
            f"worker: {args.workers} process(es), batch {args.batch_records:,} records / "
            f"{args.flush_ms:g} ms; "
            f"{args.publishers} publisher processes; {os.cpu_count()} CPUs"
        )
        ref = idempotent.rate
        print(
            f"{'variant':<76}{'pack':>5}{'readings':>11}{'seconds':>9}"
            f"{'readings/s':>12}{'msgs/s':>9}{'vs idem':>8}"
        )
        for r in table:
            msgs = f"{r.messages / r.seconds:>9,.0f}" if r.messages else f"{'':>9}"
            pack_text = f"{r.pack:>5}" if r.pack else f"{'':>5}"
            print(
                f"{r.name:<76}{pack_text}{r.readings:>11,}{r.seconds:>9.2f}"
                f"{r.rate:>12,.0f}{msgs}{r.rate / ref:>7.2f}x"
            )
        print("\nCPU per reading stored, end to end (user + system, all cores):")
        for line in cpu_lines:
            print(f"  {line}")
        print(
            f"\nlatency, publish to committed row: packs of 100 paced at "
            f"{args.latency_rate:,.0f} readings/s for {latency_s:g} s "
            f"(achieved {lat_rate:,.0f}/s, publisher at most {behind * 1000:.0f} ms behind "
            f"schedule); {len(lat):,} of {lat_packs:,} packs seen"
        )
        if lat:
            print(
                f"  p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, "
                f"mean {statistics.fmean(lat) * 1000:.0f} ms"
            )
        if receipt_lags:
            print(
                f"  receipt lag (publish to the receipt's arrival at the publisher), "
                f"{len(receipt_lags):,} of {lat_packs:,} packs receipted: "
                f"p50 {percentile(receipt_lags, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(receipt_lags, 0.99) * 1000:.0f} ms, "
                f"max {max(receipt_lags) * 1000:.0f} ms"
            )
        print(
            "  method: each pack's SenML time is its publish wall-clock time and it holds one "
            "record of a marker sensor;\n  a poller reads the marker's new rows every 20 ms "
            "(primary-key range): latency = first seen - record time,\n  an over-estimate by "
            "0-20 ms plus one query's time."
        )
        print(
            f"\nworker memory (RSS): idle {idle_rss / 1024:.0f} MiB, peak during the throughput "
            f"runs (VmHWM) {run_hwm / 1024:.0f} MiB, peak of the whole run {final_hwm / 1024:.0f}"
            f" MiB; worker {'still running' if alive else 'EXITED'}"
        )
        if down is not None:
            peaks = sampler.peaks
            print(
                f"database outage: {args.outage_rate:,.0f} readings/s published throughout; "
                f"PostgreSQL down {down['down']:.1f} s; the worker wrote again "
                f"{down['resumed']:.1f} s after the restart,\n  all stored {down['drained']:.1f} s "
                f"after the last publish; RSS peak before {peaks.get('before', 0) / 1024:.0f} MiB, "
                f"during {peaks.get('during', 0) / 1024:.0f} MiB, "
                f"after {peaks.get('after', 0) / 1024:.0f} MiB; published {down['published']:,},"
                f" stored {down['stored']:,}: "
                f"{'every reading arrived' if down['stored'] == down['published'] else 'MISSING'}"
            )
        else:
            print("database outage: skipped (a given --database-url cannot be stopped here)")
        if statements:
            print("\npg_stat_statements, packs-of-100 end-to-end run (calls, ms, query):")
            for calls, ms, query in statements:
                print(f"  {calls:>7,} {ms:>8,} {query}")
        p99 = percentile(lat, 0.99) if lat and len(lat) == lat_packs else float("inf")
        receipt_p99 = (
            percentile(receipt_lags, 0.99)
            if receipt_lags and len(receipt_lags) == lat_packs
            else float("inf")
        )
        at_rate = args.latency_rate >= 20_000
        targets = [
            (">= 300,000 readings/s end to end, packs of 100", e2e[100].rate >= 300_000,
             f"{e2e[100].rate:,.0f}/s"),
            (">= 25% of a plain binary COPY (unkeyed), packs of 100",
             e2e[100].rate >= 0.25 * plain.rate, f"{e2e[100].rate / plain.rate:.1%}"),
            (">= 150,000 readings/s end to end, packs of 10", e2e[10].rate >= 150_000,
             f"{e2e[10].rate:,.0f}/s"),
            (">= 30x the naive ingestor", e2e[100].rate >= 30 * naive_row.rate,
             f"{e2e[100].rate / naive_row.rate:.0f}x"),
            ("p99 publish-to-row < 100 ms at 20,000 readings/s", p99 < 0.1 and at_rate,
             f"{p99 * 1000:.0f} ms"),
            ("receipt lag p99 < 250 ms at 20,000 readings/s", receipt_p99 < 0.25 and at_rate,
             f"{receipt_p99 * 1000:.0f} ms"),
        ]  # fmt: skip
        print("\ntargets")
        for text, ok, value in targets:
            print(f"  {'PASS' if ok else 'FAIL'}  {text}: {value}")
        if args.profile:
            print(f"\npy-spy profiles of the worker (each pack size): {args.profile}")
    finally:
        if sampler is not None:
            sampler.close()
        for running in workers:
            running.stop()
        if broker is not None:
            broker.close()
        if pg is not None:
            pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
