"""``urbanpulse simulate``: the manifest, the example scenario, a short run against a broker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
