"""`urbanpulse mqtt credentials` against a real Mosquitto (Debian's, 2.0.11 on this machine)
started with deploy/mosquitto/mosquitto.conf itself, only its port and paths moved into a
temporary directory, and the password file and ACL the command wrote from a real registry.

What Mosquitto does with a gateway publishing on another's topic, as observed here: with
MQTT 5 the PUBACK carries reason 135 (not authorized), nothing is delivered, and the session
survives (the same client then publishes on its own topic and that arrives). Mosquitto 2.0's
ACL file is applied when a message is delivered, not at SUBSCRIBE: a subscription to '#' or
to another gateway's down topic is granted, and receives nothing the ACL does not allow.

The TLS listener (port 8883 in deploy/) is run too, with a CA and certificates made by
`urbanpulse mqtt certs`: a gateway certificate from that CA and the password get in; a
certificate from another CA, or none, is refused; a client trusting another CA refuses the broker.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from typer.testing import CliRunner

from services.cli import app
from services.devstack.broker import find_mosquitto
from services.devstack.postgres import free_port
from services.mqtt_identity.files import SERVICE_USERS, render_acl
from services.storage.urls import libpq_url

from .waiting import wait_for

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"
NOT_AUTHORIZED = 135

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed")


@dataclass
class Broker:
    port: int
    auth_dir: Path
    pid: int
    tls_port: int
    tls_dir: Path


@dataclass
class Client:
    client: mqtt.Client
    connack: ReasonCode | None
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    acks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)

    def subscribe(self, topic: str) -> ReasonCode:
        _, mid = self.client.subscribe(topic, qos=1)
        wait_for(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes = b"x") -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.acks, f"PUBACK for {topic}")
        return self.acks[info.mid]

    def received(self, timeout: float = 2.0) -> list[tuple[str, bytes]]:
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            got.append((message.topic, message.payload))
        return got


def _config(text: str, port: int, tls_port: int, directory: Path) -> str:
    """The deploy config with its container paths and ports moved here; nothing else changed."""
    replaced = (
        text.replace("listener 1883\n", f"listener {port} 127.0.0.1\n")
        .replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
        .replace("/mosquitto/auth/", f"{directory / 'auth'}/")
        .replace("/mosquitto/data/", f"{directory / 'data'}/")
        .replace("/mosquitto/tls/", f"{directory / 'tls'}/")
    )
    # Both listeners, both listeners' passwd and acl, the data directory, three TLS files.
    assert replaced.count(str(directory)) == 8
    # As root Mosquitto would drop to the `mosquitto` user, which cannot read our 0600 files.
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    return replaced + f"user {user}\n"


@pytest.fixture
def registry(make_database: object) -> str:
    url: str = make_database("partitioned")  # type: ignore[operator]
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(
            "INSERT INTO gateways (id, status) VALUES "
            "('gw-a', 'active'), ('gw-b', 'active'), ('gw-old', 'retired')"
        )
    return url


def _cli(url: str, auth_dir: Path, *args: str, pid: int | None = None) -> str:
    extra = ["--reload-pid", str(pid)] if pid is not None else []
    command = [*args[:3], "--auth-dir", str(auth_dir), *args[3:], *extra]
    result = CliRunner().invoke(app, command, env={"URBANPULSE_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.fixture
def broker(tmp_path: Path, registry: str) -> Iterator[Broker]:
    auth, tls = tmp_path / "auth", tmp_path / "tls"
    (tmp_path / "data").mkdir()
    # The files exist before the broker starts: the ingest user, the CA and its certificate.
    _cli(registry, auth, "mqtt", "credentials", "service", "ingest")
    runner = CliRunner()
    for args in (["ca"], ["broker", "--host", "127.0.0.1"]):
        result = runner.invoke(app, ["mqtt", "certs", *args, "--tls-dir", str(tls)])
        assert result.exit_code == 0, result.output
    port, tls_port = free_port(), free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(_config(DEPLOY_CONF.read_text(), port, tls_port, tmp_path))
    executable = find_mosquitto()
    assert executable is not None
    with (tmp_path / "mosquitto.log").open("ab") as log:
        process = subprocess.Popen([executable, "-c", str(config)], stdout=log, stderr=log)
    try:
        wait_for(lambda: _listening(port) and _listening(tls_port), "Mosquitto listening")
        yield Broker(port, auth, process.pid, tls_port, tls)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _connect(
    broker: Broker, user: str | None, password: str | None, tls: ssl.SSLContext | None = None
) -> Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{user}-{secrets.token_hex(3)}",
        protocol=mqtt.MQTTv5,
    )
    if user is not None:
        client.username_pw_set(user, password)
    if tls is not None:
        client.tls_set_context(tls)
    answers: list[ReasonCode] = []
    closed: list[bool] = []
    wrapper = Client(client, None)
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
    client.on_disconnect = lambda *_args: closed.append(True)
    client.on_message = lambda _c, _u, message: wrapper.messages.put(message)
    client.on_publish = lambda _c, _u, mid, reason, _p: wrapper.acks.__setitem__(mid, reason)
    client.on_subscribe = lambda _c, _u, mid, reasons, _p: wrapper.subacks.__setitem__(
        mid, list(reasons)
    )
    try:
        client.connect("127.0.0.1", broker.tls_port if tls else broker.port, keepalive=10)
    except (ssl.SSLError, OSError):
        return wrapper  # no CONNACK: refused during the TLS handshake
    client.loop_start()
    wait_for(lambda: answers or closed, "CONNACK")
    wrapper.connack = answers[0] if answers else None
    return wrapper


def _refused(client: Client) -> bool:
    refused = client.connack is None or client.connack.is_failure
    if refused:
        client.client.loop_stop()  # an accepted one is stopped by the `clients` fixture
    return refused


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for wrapper in made:
        wrapper.client.disconnect()
        wrapper.client.loop_stop()


def _ingest_password(broker: Broker, registry: str) -> str:
    return _cli(
        registry, broker.auth_dir, "mqtt", "credentials", "service", "ingest", pid=broker.pid
    )


def _reloaded() -> None:
    # SIGHUP is asynchronous: Mosquitto rereads the files at its next loop turn.
    time.sleep(0.5)


def _create(broker: Broker, registry: str, gateway_id: str) -> str:
    """A gateway's first password, the broker reloaded."""
    command = ("mqtt", "credentials", "create", gateway_id)
    password = _cli(registry, broker.auth_dir, *command, pid=broker.pid)
    _reloaded()
    return password


def _accepted(clients: list[Client], client: Client) -> Client:
    clients.append(client)
    assert not _refused(client)
    return client


def test_a_gateway_publishes_its_own_topics_and_ingest_receives_them(
    broker: Broker, registry: str, clients: list[Client]
) -> None:
    ingest_password = _ingest_password(broker, registry)
    password = _create(broker, registry, "gw-a")
    ingest = _connect(broker, "ingest", ingest_password)
    plain = _connect(broker, "ingest", ingest_password)
    gateway = _connect(broker, "gw-a", password)
    clients += [ingest, plain, gateway]
    assert not ingest.connack.is_failure  # type: ignore[union-attr]
    assert not gateway.connack.is_failure  # type: ignore[union-attr]
    assert not ingest.subscribe("$share/ingest/ssc/v1/+/up").is_failure
    assert not plain.subscribe("ssc/v1/+/status").is_failure
    assert gateway.publish("ssc/v1/gw-a/up", b"pack").value == 0
    assert gateway.publish("ssc/v1/gw-a/status", b"online").value == 0
    assert ingest.received() == [("ssc/v1/gw-a/up", b"pack")]
    assert plain.received() == [("ssc/v1/gw-a/status", b"online")]
    # Receipts: ingestion writes a gateway's down topic, which only that gateway reads.
    assert not gateway.subscribe("ssc/v1/gw-a/down").is_failure
    assert ingest.publish("ssc/v1/gw-a/down", b"receipt").value == 0
    assert gateway.received() == [("ssc/v1/gw-a/down", b"receipt")]


def test_anonymous_and_wrong_passwords_are_refused(
    broker: Broker, registry: str, clients: list[Client]
) -> None:
    password = _create(broker, registry, "gw-a")
    assert _refused(_connect(broker, None, None))
    assert _refused(_connect(broker, "gw-a", password + "x"))
    assert _refused(_connect(broker, "gw-b", password))  # another gateway's password
    accepted = _connect(broker, "gw-a", password)
    clients.append(accepted)
    assert not _refused(accepted)


def test_a_gateway_cannot_publish_on_or_read_another_gateways_topics(
    broker: Broker, registry: str, clients: list[Client]
) -> None:
    ingest_password = _ingest_password(broker, registry)
    password_a = _cli(registry, broker.auth_dir, "mqtt", "credentials", "create", "gw-a")
    _cli(registry, broker.auth_dir, "mqtt", "credentials", "create", "gw-b", pid=broker.pid)
    _reloaded()
    ingest = _connect(broker, "ingest", ingest_password)
    gateway_a = _connect(broker, "gw-a", password_a)
    clients += [ingest, gateway_a]
    assert not ingest.subscribe("ssc/v1/+/up").is_failure
    assert gateway_a.publish("ssc/v1/gw-b/up", b"spoof").value == NOT_AUTHORIZED
    assert gateway_a.publish("ssc/v1/gw-b/status", b"spoof").value == NOT_AUTHORIZED
    assert gateway_a.publish("ssc/v1/gw-a/down", b"spoof").value == NOT_AUTHORIZED
    # Nothing spoofed arrives, and A's session survives: its own pack still goes through.
    assert gateway_a.publish("ssc/v1/gw-a/up", b"own").value == 0
    assert ingest.received() == [("ssc/v1/gw-a/up", b"own")]
    # Mosquitto 2.0.11 grants a subscription to B's down (its ACL file checks read access on
    # delivery), but delivers nothing of it to A.
    gateway_a.subscribe("ssc/v1/gw-b/down")
    gateway_a.subscribe("ssc/v1/+/down")
    assert ingest.publish("ssc/v1/gw-b/down", b"for b").value == 0
    assert ingest.publish("ssc/v1/gw-a/down", b"for a").value == 0
    assert gateway_a.received() == [("ssc/v1/gw-a/down", b"for a")]


def test_a_subscription_to_everything_delivers_only_what_the_acl_allows(
    broker: Broker, registry: str, clients: list[Client]
) -> None:
    # Mosquitto 2.0's ACL file is applied on delivery: the SUBACK of '#' says granted, but a
    # subscriber gets nothing its ACL does not let it read. So '#' is no way round it.
    ingest_password = _ingest_password(broker, registry)
    password_a = _cli(registry, broker.auth_dir, "mqtt", "credentials", "create", "gw-a")
    password_b = _create(broker, registry, "gw-b")
    gateway_a = _connect(broker, "gw-a", password_a)
    gateway_b = _connect(broker, "gw-b", password_b)
    ingest = _connect(broker, "ingest", ingest_password)
    clients += [gateway_a, gateway_b, ingest]
    for client in (gateway_a, ingest):
        client.subscribe("#")
    assert gateway_b.publish("ssc/v1/gw-b/up", b"b-up").value == 0
    assert gateway_b.publish("ssc/v1/gw-b/status", b"b-status").value == 0
    assert ingest.publish("ssc/v1/gw-b/down", b"b-receipt").value == 0
    assert ingest.publish("ssc/v1/gw-a/down", b"a-receipt").value == 0
    assert gateway_a.received() == [("ssc/v1/gw-a/down", b"a-receipt")]
    # Ingestion reads every gateway's up and status, not the receipts meant for gateways.
    assert sorted(ingest.received()) == [
        ("ssc/v1/gw-b/status", b"b-status"),
        ("ssc/v1/gw-b/up", b"b-up"),
    ]


def test_a_revoked_gateway_is_refused_after_the_reload(
    broker: Broker, registry: str, clients: list[Client]
) -> None:
    password = _create(broker, registry, "gw-a")
    _accepted(clients, _connect(broker, "gw-a", password))
    _cli(registry, broker.auth_dir, "mqtt", "credentials", "revoke", "gw-a", pid=broker.pid)
    _reloaded()
    assert _refused(_connect(broker, "gw-a", password))


def test_a_retired_gateway_loses_its_access_at_the_next_sync(
    broker: Broker, registry: str, clients: list[Client]
) -> None:
    password = _create(broker, registry, "gw-b")
    _accepted(clients, _connect(broker, "gw-b", password))
    with psycopg.connect(libpq_url(registry)) as conn:
        conn.execute("UPDATE gateways SET status = 'retired' WHERE id = 'gw-b'")
    _cli(registry, broker.auth_dir, "mqtt", "credentials", "sync", pid=broker.pid)
    _reloaded()
    assert "gw-b" not in (broker.auth_dir / "passwd").read_text()
    assert _refused(_connect(broker, "gw-b", password))


def test_rotation_refuses_the_old_password_and_accepts_the_new(
    broker: Broker, registry: str, clients: list[Client]
) -> None:
    old = _cli(registry, broker.auth_dir, "mqtt", "credentials", "create", "gw-a", pid=broker.pid)
    new = _cli(registry, broker.auth_dir, "mqtt", "credentials", "rotate", "gw-a", pid=broker.pid)
    _reloaded()
    assert old != new
    assert _refused(_connect(broker, "gw-a", old))
    accepted = _connect(broker, "gw-a", new)
    clients.append(accepted)
    assert not _refused(accepted)
    assert not accepted.publish("ssc/v1/gw-a/up").is_failure


@pytest.mark.parametrize(
    ("gateway_id", "says"),
    [
        ("gw-old", "retired"),
        ("gw-nowhere", "not in the registry"),
        ("ingest", "service user"),
        ("gw/a", "not a gateway id"),
    ],
)
def test_credentials_only_for_registered_active_gateways(
    registry: str, tmp_path: Path, gateway_id: str, says: str
) -> None:
    result = CliRunner().invoke(
        app,
        ["mqtt", "credentials", "create", gateway_id, "--auth-dir", str(tmp_path)],
        env={"URBANPULSE_DATABASE_URL": registry},
    )
    assert result.exit_code == 2
    assert says in result.stderr
    assert not (tmp_path / "passwd").exists()


def test_the_acl_names_each_gateway_and_no_wildcard_for_gateways() -> None:
    acl = render_acl(["gw-a", "gw-old", *SERVICE_USERS], active_gateways=["gw-a"])
    assert "user gw-old" not in acl
    assert "topic write ssc/v1/gw-a/up" in acl
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert not [rule for rule in rules if rule.startswith("pattern")]
    assert not [rule for rule in rules if rule.split()[-1] in {"#", "+/#", "ssc/#"}]


def _tls(ca: Path, cert_dir: Path | None = None, gateway_id: str = "") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert_dir is not None:
        context.load_cert_chain(cert_dir / f"{gateway_id}.crt", cert_dir / f"{gateway_id}.key")
    return context


def test_the_tls_listener_takes_only_the_city_cas_certificates(
    broker: Broker, registry: str, clients: list[Client], tmp_path: Path
) -> None:
    password = _create(broker, registry, "gw-a")
    runner = CliRunner()
    issued = runner.invoke(
        app,
        [
            "mqtt",
            "certs",
            "gateway",
            "gw-a",
            "--out",
            str(tmp_path / "gw"),
            "--tls-dir",
            str(broker.tls_dir),
        ],
    )
    assert issued.exit_code == 0, issued.output
    # Another CA, and a gateway certificate it signed.
    other = tmp_path / "other"
    for args in (["ca"], ["gateway", "gw-a", "--out", str(other / "gw")]):
        result = runner.invoke(app, ["mqtt", "certs", *args, "--tls-dir", str(other)])
        assert result.exit_code == 0, result.output
    ca = broker.tls_dir / "ca.crt"

    accepted = _connect(broker, "gw-a", password, _tls(ca, tmp_path / "gw", "gw-a"))
    clients.append(accepted)
    assert not _refused(accepted)
    assert not accepted.publish("ssc/v1/gw-a/up").is_failure
    # The broker refuses a client certificate from another CA, and a client without one.
    assert _refused(_connect(broker, "gw-a", password, _tls(ca, other / "gw", "gw-a")))
    assert _refused(_connect(broker, "gw-a", password, _tls(ca)))
    # A gateway trusting another CA refuses the broker (it verifies the broker).
    wrong_trust = _tls(other / "ca.crt")
    with (
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        wrong_trust.wrap_socket(raw, server_hostname="127.0.0.1")
    # The password still counts on the TLS listener.
    assert _refused(_connect(broker, "gw-a", password + "x", _tls(ca, tmp_path / "gw", "gw-a")))
