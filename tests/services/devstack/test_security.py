"""`urbanpulse up` lets no one in for free: attacked as an outsider and a local user would, over
loopback, through the real broker, database and API it starts (issue 11)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway import topics
from gateway.senml import Record, encode
from services.devstack.broker import _stop_leftover_mosquitto
from services.devstack.postgres import EmbeddedPostgres
from services.devstack.up import _server_data_dir

ROOT = Path(__file__).resolve().parents[3]
GATEWAYS = ("gw-a", "gw-b")


@dataclass
class Up:
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    passwords: dict[str, str]  # the gateways' broker passwords, written before the start

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def env(self) -> dict[str, str]:
        lines = (self.data_dir / "urbanpulse.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    @property
    def mosquitto(self) -> bool:
        return (self.data_dir / "broker" / "mosquitto.conf").exists()


def _start_up(data_dir: Path, passwords: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin:/usr/sbin"),
        "HOME": str(data_dir),
        "COLUMNS": "200",
        "URBANPULSE_API_PORT": "0",
    }
    if "LD_LIBRARY_PATH" in os.environ:  # a Mosquitto unpacked beside the system's
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    broker_dir = data_dir / "broker"
    broker_dir.mkdir(parents=True, exist_ok=True)
    # Gateways of one's own are added to the broker's credentials by hand.
    path = broker_dir / "credentials.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**known, **passwords}))
    path.chmod(0o600)
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--no-city", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )


def _wait_up(up: Up, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "UrbanPulse is up" not in up.output:
        if up.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"up did not start:\n{up.output}")
        time.sleep(0.2)


def _register(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for gateway in GATEWAYS:
            conn.execute("INSERT INTO gateways (id) VALUES (%s) ON CONFLICT DO NOTHING", (gateway,))
            conn.execute(
                "INSERT INTO sensors (id, kind, domain, gateway_id) "
                "VALUES (%s, 'feeder_meter', 'energy', %s) ON CONFLICT DO NOTHING",
                (f"fdr-{gateway}", gateway),
            )


def _cleanup(data_dir: Path) -> None:
    """Whatever a failed test left running on ``data_dir`` is stopped, then the files go."""
    broker = data_dir / "broker"
    _stop_leftover_mosquitto(broker / "mosquitto.pid", broker / "mosquitto.conf")
    pg_dir = _server_data_dir(data_dir)
    if (pg_dir / "postmaster.pid").exists():
        EmbeddedPostgres(pg_dir)._stop_leftover()
    shutil.rmtree(data_dir, ignore_errors=True)
    if pg_dir.parent != data_dir:
        shutil.rmtree(pg_dir.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    """One `urbanpulse up` (no simulated city), with two gateways of our own registered."""
    # Not pytest's tmp_path: as root the server runs as another user, who cannot enter it.
    data_dir = Path(tempfile.mkdtemp(prefix="urbanpulse-sec-"))
    passwords = {gateway: uuid.uuid4().hex for gateway in GATEWAYS}
    log = data_dir / "up.log"
    with log.open("wb") as handle:
        running = Up(data_dir, _start_up(data_dir, passwords, handle), log, passwords)
    try:
        _wait_up(running)
        _register(running.env["URBANPULSE_DATABASE_URL"])
        yield running
    finally:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(60)
        except subprocess.TimeoutExpired:
            running.process.kill()
        _cleanup(data_dir)


# -- MQTT ----------------------------------------------------------------------------------


def _connect(
    url: str, username: str | None = None, password: str | None = None, timeout: float = 5.0
) -> tuple[mqtt.Client, bool]:
    """A paho client and whether the broker accepted it (a refusal is a failed CONNACK, or
    rumqttd closing the connection)."""
    parts = urlsplit(url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"attacker-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if username is not None:
        client.username_pw_set(username, password)
    answered = threading.Event()
    accepted: list[bool] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        accepted.append(not getattr(reason, "is_failure", True))
        answered.set()

    def on_disconnect(*_args: object) -> None:
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    answered.wait(timeout)
    ok = bool(accepted) and accepted[0] and client.is_connected()
    if not ok:
        client.loop_stop()
    return client, ok


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def _pack(sensor: str, start: float, count: int, value: float = 230.0) -> bytes:
    return encode(
        [
            Record(name=f"{sensor}/voltage", time=start + i, unit="V", value=value)
            for i in range(count)
        ]
    )


def _readings(database_url: str, sensor: str, since: float, until: float) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings JOIN sensors ON sensors.key = readings.sensor_key "
            "WHERE sensors.id = %s AND time >= to_timestamp(%s) AND time < to_timestamp(%s)",
            (sensor, since, until),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _wait_readings(
    database_url: str, sensor: str, since: float, until: float, expected: int, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _readings(database_url, sensor, since, until) >= expected:
            break
        time.sleep(0.2)
    return _readings(database_url, sensor, since, until)


def test_the_broker_refuses_clients_without_a_password(up: Up) -> None:
    url = up.env["URBANPULSE_MQTT_URL"]
    for username, password in ((None, None), ("gw-a", "wrong"), ("ingest", "")):
        _, accepted = _connect(url, username, password)
        assert not accepted, f"{up.output}\nthe broker accepted {username!r}"


def test_the_services_use_their_passwords_and_a_gateway_its_own(up: Up) -> None:
    env = up.env
    # The ingest worker stores what gw-a publishes with its password...
    client, accepted = _connect(env["URBANPULSE_MQTT_URL"], "gw-a", up.passwords["gw-a"])
    assert accepted
    start = time.time() - 600
    client.publish(topics.up_topic("gw-a"), _pack("fdr-gw-a", start, 20), qos=1).wait_for_publish(
        10
    )
    _close(client)
    database_url = env["URBANPULSE_DATABASE_URL"]
    assert _wait_readings(database_url, "fdr-gw-a", start, start + 20, 20, timeout=30) == 20
    # ...and the API's readiness check logs in to the broker with the API's own. (Its MQTT
    # 3.1.1 CONNECT gets no answer from rumqttd's MQTT 5 listener, password or not.)
    if up.mosquitto:
        readyz = f"{env['URBANPULSE_API_URL']}/readyz"
        with urllib.request.urlopen(readyz, timeout=10) as response:
            assert json.load(response)["status"] == "ready"
    # The services' MQTT login in urbanpulse.env is the ingest user's.
    assert env["URBANPULSE_MQTT_USERNAME"] == "ingest"


def test_a_gateway_can_neither_speak_for_nor_read_another(up: Up) -> None:
    if not up.mosquitto:
        assert "cannot enforce the ACL" in up.output  # and it says so
        pytest.skip("rumqttd has no ACL: install mosquitto to run this test")
    url, database_url = up.env["URBANPULSE_MQTT_URL"], up.env["URBANPULSE_DATABASE_URL"]
    received: list[mqtt.MQTTMessage] = []
    spy, accepted = _connect(url, "gw-a", up.passwords["gw-a"])
    assert accepted
    spy.on_message = lambda _c, _u, message: received.append(message)
    spy.subscribe("#", qos=1)
    start = time.time() - 1200
    # Forged readings and a forged retained "offline" status on gw-b's topics (Mosquitto drops
    # a client that publishes outside its ACL, so one connection each).
    for topic, payload, retain in (
        (topics.up_topic("gw-b"), _pack("fdr-gw-b", start, 10, value=999.0), False),
        (topics.status_topic("gw-b"), b"offline", True),
    ):
        forger, accepted = _connect(url, "gw-a", up.passwords["gw-a"])
        assert accepted
        info = forger.publish(topic, payload, qos=1, retain=retain)
        with contextlib.suppress(RuntimeError):  # disconnected before its PUBACK
            info.wait_for_publish(5)
        _close(forger)
    # ...then gw-b's own, which the worker stores, and which gw-a's `#` must not see.
    genuine, accepted = _connect(url, "gw-b", up.passwords["gw-b"])
    assert accepted
    genuine.publish(
        topics.up_topic("gw-b"), _pack("fdr-gw-b", start + 100, 10), qos=1
    ).wait_for_publish(10)
    _close(genuine)
    assert _wait_readings(database_url, "fdr-gw-b", start + 100, start + 110, 10, timeout=30) == 10
    time.sleep(1.0)  # anything forged would have been stored by now
    assert _readings(database_url, "fdr-gw-b", start, start + 10) == 0
    assert spy.is_connected()  # its `#` was heard all along
    _close(spy)
    assert [m.topic for m in received if "gw-b" in m.topic] == []
    # No retained status for gw-b was accepted from gw-a.
    reader, accepted = _connect(
        url,
        "ingest",
        json.loads((up.data_dir / "broker" / "credentials.json").read_text())["ingest"],
    )
    assert accepted
    retained: list[mqtt.MQTTMessage] = []
    reader.on_message = lambda _c, _u, message: retained.append(message)
    reader.subscribe(topics.status_topic("gw-b"), qos=1)
    time.sleep(1.0)
    _close(reader)
    assert retained == []


# -- PostgreSQL ----------------------------------------------------------------------------


def test_the_database_wants_a_password_from_everyone(up: Up) -> None:
    port = urlsplit(up.env["URBANPULSE_DATABASE_URL"]).port
    for user in ("postgres", "urbanpulse", "nobody"):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://{user}@127.0.0.1:{port}/postgres", connect_timeout=5)
    # Even with the superuser's password, no physical replication (a copy of every table).
    server = EmbeddedPostgres(_server_data_dir(up.data_dir))
    server.port = port
    with pytest.raises(psycopg.OperationalError, match="replication"):
        psycopg.connect(server.url + "?replication=true", connect_timeout=5)


def test_the_services_connect_as_a_role_that_is_not_a_superuser(up: Up) -> None:
    with psycopg.connect(up.env["URBANPULSE_DATABASE_URL"], autocommit=True) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert role == (False, False, False, False)
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() is not None  # its own
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file('postgresql.conf')")


# -- secrets -------------------------------------------------------------------------------


def test_secrets_stay_in_owner_only_files_and_out_of_the_output(up: Up) -> None:
    pg_dir = _server_data_dir(up.data_dir)
    for path in (
        up.data_dir / "urbanpulse.env",
        up.data_dir / "api-key",
        up.data_dir / "broker" / "credentials.json",
        pg_dir / "urbanpulse-superuser.password",
        pg_dir / "urbanpulse-app.password",
    ):
        assert path.stat().st_mode & 0o077 == 0, path
    output = up.output
    key = (up.data_dir / "api-key").read_text().strip()
    secrets = [
        key,
        key.partition(".")[2],
        urlsplit(up.env["URBANPULSE_DATABASE_URL"]).password,
        (pg_dir / "urbanpulse-superuser.password").read_text().strip(),
        *json.loads((up.data_dir / "broker" / "credentials.json").read_text()).values(),
    ]
    assert all(secret and secret not in output for secret in secrets)
    assert str(up.data_dir / "api-key") in output  # where the key is, instead


# -- what a killed `up` leaves behind ------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_the_next_up_takes_over_what_a_killed_up_left_running() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="urbanpulse-kill-"))
    passwords = {gateway: uuid.uuid4().hex for gateway in GATEWAYS}
    log = data_dir / "up.log"
    try:
        with log.open("wb") as handle:
            first = Up(data_dir, _start_up(data_dir, passwords, handle), log, passwords)
        _wait_up(first)
        env = first.env
        _register(env["URBANPULSE_DATABASE_URL"])
        postmaster = int((_server_data_dir(data_dir) / "postmaster.pid").read_text().split()[0])
        broker_pid_file = data_dir / "broker" / "mosquitto.pid"
        broker_pid = int(broker_pid_file.read_text()) if first.mosquitto else None
        first.process.kill()
        first.process.wait(10)
        start = time.time() - 3000
        if broker_pid is not None:
            # The orphaned broker still takes readings, queued for the dead worker's session.
            assert _alive(broker_pid)
            client, accepted = _connect(env["URBANPULSE_MQTT_URL"], "gw-a", passwords["gw-a"])
            assert accepted
            infos = [
                client.publish(topics.up_topic("gw-a"), _pack("fdr-gw-a", start + i, 1), qos=1)
                for i in range(500)
            ]
            for info in infos:
                info.wait_for_publish(10)
            _close(client)
        log = data_dir / "up-again.log"
        with log.open("wb") as handle:
            second = Up(data_dir, _start_up(data_dir, passwords, handle), log, passwords)
        try:
            _wait_up(second)
            assert not _alive(postmaster)
            assert "stopped the PostgreSQL" in second.output
            again = second.env
            # Same addresses as before: clients with persistent sessions find their broker.
            assert again["URBANPULSE_DATABASE_URL"] == env["URBANPULSE_DATABASE_URL"]
            assert again["URBANPULSE_MQTT_URL"] == env["URBANPULSE_MQTT_URL"]
            if broker_pid is not None:
                assert not _alive(broker_pid)
                assert "stopped the MQTT broker" in second.output
                stored = _wait_readings(
                    again["URBANPULSE_DATABASE_URL"], "fdr-gw-a", start, start + 500, 500, 60
                )
                assert stored == 500
        finally:
            second.process.send_signal(signal.SIGTERM)
            second.process.wait(60)
        assert second.process.returncode == 0, second.output
    finally:
        _cleanup(data_dir)


# -- a data directory from before ----------------------------------------------------------


def test_a_data_directory_that_trusted_everyone_is_refused_with_what_to_do() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="urbanpulse-old-"))
    try:
        server = EmbeddedPostgres(_server_data_dir(data_dir))
        server._prepare()
        # What `urbanpulse up` made before: the superuser with no password for anyone.
        server._run(["initdb", "-D", str(server.data_dir), "-U", "postgres", "--auth=trust"])
        with (data_dir / "up.log").open("wb") as handle:
            process = _start_up(data_dir, {}, handle)
            returncode = process.wait(120)
        output = (data_dir / "up.log").read_text()
        assert returncode == 1, output
        assert "trust authentication" in output
        assert "remove or move the directory" in " ".join(output.split())
        assert not (server.data_dir / "postmaster.pid").exists()  # nothing was started
    finally:
        _cleanup(data_dir)
