"""The brokers the tests and `make up` start: what the delivery guarantee needs of them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from services.devstack.broker import (
    GUARANTEE_SETTINGS,
    BrokerError,
    credentials,
    mosquitto_password_hash,
)
from tests.fixtures.broker import BrokerUnderTest, MqttConnect, require

ROOT = Path(__file__).resolve().parents[3]


def _publish(subscriber_or_client: mqtt.Client, topic: str, count: int) -> None:
    infos = [subscriber_or_client.publish(topic, f"{i}".encode(), qos=1) for i in range(count)]
    for info in infos:
        info.wait_for_publish(10)


def test_the_deploy_config_sets_what_the_guarantee_needs() -> None:
    lines = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    settings = dict(
        line.split(maxsplit=1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert {key: settings.get(key) for key in GUARANTEE_SETTINGS} == GUARANTEE_SETTINGS


def test_qos1_messages_arrive_in_order(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, topic_prefix: str
) -> None:
    subscriber = mqtt_connect(mqtt_broker, subscribe=f"{topic_prefix}/#")
    time.sleep(0.2)
    publisher = mqtt_connect(mqtt_broker)
    _publish(publisher.client, f"{topic_prefix}/up", 500)
    received = subscriber.wait_for(500)
    assert [m.payload.decode() for m in received] == [str(i) for i in range(500)]


def test_a_persistent_session_keeps_more_than_mosquittos_default_queue(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, topic_prefix: str
) -> None:
    # Mosquitto's default max_queued_messages (1000) would silently drop the newest 2000.
    client_id = f"ingest-{topic_prefix[-12:]}"
    away = mqtt_connect(
        mqtt_broker, client_id=client_id, persistent=True, subscribe=f"{topic_prefix}/#"
    )
    time.sleep(0.2)
    away.client.disconnect()
    away.client.loop_stop()
    publisher = mqtt_connect(mqtt_broker)
    _publish(publisher.client, f"{topic_prefix}/up", 3000)
    back = mqtt_connect(mqtt_broker, client_id=client_id, persistent=True)
    received = back.wait_for(3000, timeout=20)
    assert sorted(int(m.payload) for m in received) == list(range(3000))


def test_unacknowledged_messages_come_back_after_a_reconnect(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, topic_prefix: str
) -> None:
    client_id = f"ingest-{topic_prefix[-12:]}"
    first = mqtt_connect(
        mqtt_broker,
        client_id=client_id,
        persistent=True,
        manual_ack=True,
        subscribe=f"{topic_prefix}/#",
    )
    time.sleep(0.2)
    publisher = mqtt_connect(mqtt_broker)
    _publish(publisher.client, f"{topic_prefix}/up", 40)
    received = first.wait_for(40)
    for message in received[:20]:  # the first 20 were committed, the rest were not
        first.client.ack(message.mid, message.qos)
    time.sleep(0.3)
    first.client.disconnect()
    first.client.loop_stop()
    again = mqtt_connect(mqtt_broker, client_id=client_id, persistent=True)
    redelivered = again.wait_for(20)
    time.sleep(0.3)
    assert sorted(int(m.payload) for m in again.messages) == list(range(20, 40))
    assert len(redelivered) == 20


def test_a_restart_keeps_sessions_and_queued_messages(
    own_broker: BrokerUnderTest, mqtt_connect: MqttConnect, topic_prefix: str
) -> None:
    require(own_broker, persistence=True, restartable=True)
    client_id = f"ingest-{topic_prefix[-12:]}"
    away = mqtt_connect(
        own_broker, client_id=client_id, persistent=True, subscribe=f"{topic_prefix}/#"
    )
    time.sleep(0.2)
    away.client.disconnect()
    away.client.loop_stop()
    publisher = mqtt_connect(own_broker)
    _publish(publisher.client, f"{topic_prefix}/up", 500)
    publisher.client.disconnect()
    assert own_broker.handle is not None
    own_broker.handle.restart()
    back = mqtt_connect(own_broker, client_id=client_id, persistent=True)
    received = back.wait_for(500, timeout=20)
    assert sorted(int(m.payload) for m in received) == list(range(500))


def test_a_shared_subscription_splits_the_stream(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, topic_prefix: str
) -> None:
    group = f"$share/ingest-{topic_prefix[-12:]}/{topic_prefix}/#"
    workers = [mqtt_connect(mqtt_broker, subscribe=group) for _ in range(2)]
    time.sleep(0.3)
    publisher = mqtt_connect(mqtt_broker)
    _publish(publisher.client, f"{topic_prefix}/up", 400)
    deadline = time.monotonic() + 10
    while sum(len(w.messages) for w in workers) < 400 and time.monotonic() < deadline:
        time.sleep(0.05)
    payloads = [int(m.payload) for w in workers for m in w.messages]
    assert sorted(payloads) == list(range(400))  # each message to exactly one worker
    assert all(w.messages for w in workers)


def test_the_embedded_fallback_carries_qos1(
    embedded_broker: BrokerUnderTest, mqtt_connect: MqttConnect, topic_prefix: str
) -> None:
    subscriber = mqtt_connect(embedded_broker, subscribe=f"{topic_prefix}/#")
    time.sleep(0.2)
    publisher = mqtt_connect(embedded_broker)
    _publish(publisher.client, f"{topic_prefix}/up", 200)
    assert [int(m.payload) for m in subscriber.wait_for(200)] == list(range(200))


@pytest.mark.parametrize("kind", ["mosquitto"])
def test_ci_runs_against_mosquitto(
    kind: str, mqtt_broker: BrokerUnderTest, mosquitto_available: bool
) -> None:
    """Where Mosquitto is installed (CI installs it), the session broker is Mosquitto."""
    if (
        not mosquitto_available
        or mqtt_broker.handle is None
        or os.environ.get("URBANPULSE_TEST_BROKER") == "embedded"
    ):
        pytest.skip("mosquitto is not installed here, or another broker was asked for")
    assert mqtt_broker.kind == kind


def test_broker_credentials_are_made_once_kept_private_and_checked(tmp_path: Path) -> None:
    first = credentials(tmp_path, ["ingest", "gw-a"])
    assert set(first) == {"ingest", "gw-a"}
    assert all(len(p) >= 24 for p in first.values())
    assert (tmp_path / "credentials.json").stat().st_mode & 0o077 == 0
    # The same passwords next time; a user added by hand is kept and returned.
    stored = json.loads((tmp_path / "credentials.json").read_text())
    (tmp_path / "credentials.json").write_text(json.dumps({**stored, "gw-mine": "secret"}))
    assert credentials(tmp_path, ["ingest"]) == {**first, "gw-mine": "secret"}
    (tmp_path / "credentials.json").write_text(json.dumps({"gw:a": "x"}))
    with pytest.raises(BrokerError, match="gw:a"):
        credentials(tmp_path, ["ingest"])


def test_the_password_hash_is_mosquittos_own() -> None:
    # Made by mosquitto_passwd 2.0: password "secret".
    salt = base64.b64decode("es+xsNoVExsCDvqk")
    assert mosquitto_password_hash("secret", salt, 101) == (
        "$7$101$es+xsNoVExsCDvqk$6pVobG9EQw5vJRsZJRzUQFKKoU5BkZlMtIhjXRBtM8Mlp0dXq4N9LgGcyxhDViezT1iT"
        "jXrsSVXfx8Fx34Jteg=="
    )


def test_the_password_hash_matches_the_installed_mosquitto_passwd(tmp_path: Path) -> None:
    executable = shutil.which("mosquitto_passwd")
    if executable is None:
        pytest.skip("mosquitto_passwd is not installed")
    # -U hashes the file in place: the password never appears in argv.
    passwd = tmp_path / "passwd"
    passwd.write_text("gw-a:another secret\n")
    subprocess.run([executable, "-U", str(passwd)], check=True, capture_output=True)
    written = passwd.read_text().strip().partition(":")[2]
    _, kind, iterations, salt, _ = written.split("$")
    assert kind == "7"
    expected = mosquitto_password_hash("another secret", base64.b64decode(salt), int(iterations))
    assert written == expected


def test_broker_credentials_start_a_file_where_there_is_none(tmp_path: Path) -> None:
    assert credentials(tmp_path / "new", []) == {}
    assert (tmp_path / "new" / "credentials.json").stat().st_mode & 0o077 == 0
