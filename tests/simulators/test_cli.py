"""``urbanpulse simulate``: the manifest, the example scenario, a short run against a broker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from services.devstack.broker import INGEST_USER, start_broker
from simulators.city import build_manifest, city_named
from simulators.cli import app
from simulators.scenario import load_scenario
from simulators.timespec import Clock, parse_time
from tests.fixtures.broker import BrokerUnderTest, MqttConnect

EXAMPLE = Path(__file__).resolve().parents[2] / "simulators" / "examples" / "scenario.toml"


def test_manifest_out_writes_the_manifest_and_exits(tmp_path: Path) -> None:
    out = tmp_path / "city.json"
    result = CliRunner().invoke(app, ["--manifest-out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["sensors"]) == 200
    assert f"urbanpulse registry load {out}" in result.output


def test_the_example_scenario_loads() -> None:
    scenario = load_scenario(EXAMPLE, 1_750_000_000.0, Clock())
    assert scenario.leaks
    assert scenario.feeder_outages["d03-f1"]
    assert len(scenario.faults) == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [("now", 1000.0), ("+2h", 8200.0), ("-1m", 940.0), ("1970-01-01T00:00:10Z", 10.0)],
)
def test_times(text: str, expected: float) -> None:
    assert parse_time(text, 1000.0) == expected


def test_relative_backfill_times_count_back() -> None:
    assert parse_time("7d", 1_000_000.0, past=True) == 1_000_000.0 - 7 * 86_400


def test_a_short_backfill_reaches_the_broker(
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = f"c{uuid.uuid4().hex[:10]}"
    subscriber = mqtt_connect(mqtt_broker, subscribe=f"ssc/v1/{prefix}-d01-water/up")
    monkeypatch.setenv("URBANPULSE_MQTT_URL", mqtt_broker.url)
    args = ["--backfill-from", "10m", "--gateway-prefix", prefix, "--quiet"]
    result = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path), "--batch", "5m"])
    assert result.exit_code == 0, result.output
    assert "sent" in result.output
    assert subscriber.wait_for(1, timeout=10)


def _gateway_ids(prefix: str) -> list[str]:
    return [gateway["id"] for gateway in build_manifest(city_named("small", prefix), 0).gateways]


def test_each_gateway_logs_in_as_itself_from_a_credentials_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a broker that refuses anyone unnamed (and, with Mosquitto, applies the ACL that
    lets a gateway publish only under its own id), as `make up` starts it."""
    prefix = f"c{uuid.uuid4().hex[:10]}"
    passwords = {gateway_id: uuid.uuid4().hex for gateway_id in _gateway_ids(prefix)}
    passwords[INGEST_USER] = "reader-password"
    broker = start_broker(tmp_path / "broker", users=passwords)
    received: list[str] = []
    reader = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    reader.username_pw_set(INGEST_USER, "reader-password")
    reader.on_message = lambda _c, _u, message: received.append(message.topic)
    try:
        reader.connect(broker.host, broker.port)
        reader.subscribe(f"ssc/v1/{prefix}-d01-water/up", qos=1)
        reader.loop_start()
        credentials = tmp_path / "credentials.json"
        credentials.write_text(json.dumps(passwords))
        monkeypatch.setenv("URBANPULSE_MQTT_URL", broker.url)
        monkeypatch.setenv("URBANPULSE_MQTT_CREDENTIALS_FILE", str(credentials))
        args = ["--backfill-from", "10m", "--gateway-prefix", prefix, "--quiet", "--batch", "5m"]
        result = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path / "state")])
        assert result.exit_code == 0, result.output
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received
    finally:
        reader.loop_stop()
        reader.disconnect()
        broker.close()


def test_a_gateway_missing_from_the_credentials_file_is_named_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"c{uuid.uuid4().hex[:10]}"
    ids = _gateway_ids(prefix)
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({gateway_id: "pw" for gateway_id in ids[1:]}))
    monkeypatch.setenv("URBANPULSE_MQTT_URL", "mqtt://127.0.0.1:9")  # never reached
    monkeypatch.setenv("URBANPULSE_MQTT_CREDENTIALS_FILE", str(credentials))
    args = ["--backfill-from", "10m", "--gateway-prefix", prefix, "--quiet"]
    result = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2
    assert f"gateway {ids[0]} has no password" in result.output
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").iterdir())
