"""The gateway process: packing by size and age, the drivers, end to end against a real broker."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from gateway.app import GatewayApp, Packer
from gateway.config import GatewaySettings
from gateway.drivers import JsonLinesDriver, LineDriver, open_driver, parse_line
from gateway.senml import Record, decode
from gateway.topics import up_topic
from simulators.city import build_manifest, small_city
from tests.fixtures.broker import BrokerUnderTest, MqttConnect
from tests.test_packaging import _gateway_only

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_750_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rec(sensor: str, i: int, quantity: str = "flow") -> Record:
    return Record(name=f"{sensor}/{quantity}", time=T0 + i, unit="m3/s", value=float(i))


# -- packing ------------------------------------------------------------------------------


def test_a_pack_is_sent_when_it_holds_max_records() -> None:
    packer = Packer(max_records=3, max_age=60, clock=FakeClock())
    assert packer.add(rec("s1", 0)) == []
    assert packer.add(rec("s2", 0)) == []
    assert packer.add(rec("s1", 1)) == []
    assert packer.add(rec("s1", 2, "pressure")) == [
        [rec("s1", 0), rec("s1", 1), rec("s1", 2, "pressure")]
    ]
    assert packer.pending == 1
    assert packer.flush() == [[rec("s2", 0)]]
    assert packer.pending == 0


def test_a_pack_is_sent_when_its_first_record_is_max_age_old() -> None:
    clock = FakeClock()
    packer = Packer(max_records=100, max_age=5, clock=clock)
    packer.add(rec("s1", 0))
    clock.now += 3
    packer.add(rec("s2", 0))
    packer.add(rec("s1", 1))
    clock.now += 1.9
    assert packer.due() == []
    clock.now += 0.1  # s1's first record is 5 s old, s2's 2 s
    assert packer.due() == [[rec("s1", 0), rec("s1", 1)]]
    clock.now += 3
    assert packer.add(rec("s3", 0)) == [[rec("s2", 0)]]  # add also hands back what is due
    assert packer.flush() == [[rec("s3", 0)]]


# -- drivers ------------------------------------------------------------------------------


def test_the_line_driver_parses_good_lines_and_counts_bad_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "\n".join(
        [
            "wat-1 flow 0.5 m3/s 1750000000",  # all fields
            "wat-1 pressure 3.2 bar",  # no epoch: now
            "wat-2 flow 7 1750000001.5",  # epoch, no unit
            "# a comment",
            "",
            "wat-3 flow notanumber m3/s",  # 6: bad value
            "wat-3",  # 7: too few fields
            "bad/id flow 1",  # 8: bad sensor id
            "wat-4 flow nan",  # 9: not finite
            "wat-4 flow 1 m3/s 17x",  # 10: bad epoch
            "wat-5 level 42",
        ]
    )
    driver = LineDriver(io.StringIO(text), clock=lambda: T0 + 99)
    records = list(driver.read())
    assert records == [
        Record(name="wat-1/flow", time=T0, unit="m3/s", value=0.5),
        Record(name="wat-1/pressure", time=T0 + 99, unit="bar", value=3.2),
        Record(name="wat-2/flow", time=T0 + 1.5, value=7.0),
        Record(name="wat-5/level", time=T0 + 99, value=42.0),
    ]
    assert driver.bad_lines == 5
    for number in (6, 7, 8, 9, 10):
        assert f"line {number} skipped" in caplog.text


def test_parse_line_skips_blanks_and_comments() -> None:
    assert parse_line("   \n", T0) is None
    assert parse_line("# wat-1 flow 1", T0) is None
    with pytest.raises(ValueError, match="fields"):
        parse_line("a b c d e f", T0)


def write_jsonl(path: Path, sensors: int, readings: int) -> list[Record]:
    expected = []
    with path.open("w") as out:
        for i in range(readings):
            for s in range(sensors):
                t = T0 + i
                out.write(
                    json.dumps({"sensor": f"s{s}", "quantity": "flow", "t": t, "v": i, "u": "m3/s"})
                    + "\n"
                )
                expected.append(Record(name=f"s{s}/flow", time=t, unit="m3/s", value=float(i)))
        out.write("not json\n")
        out.write('{"sensor": "s0", "quantity": "flow", "t": 1, "v": "x"}\n')
    return expected


def test_the_jsonl_driver_replays_a_file_and_paces_it(tmp_path: Path) -> None:
    path = tmp_path / "replay.jsonl"
    expected = write_jsonl(path, sensors=1, readings=3)
    fast = JsonLinesDriver(path, speed=0)
    assert list(fast.read()) == expected
    assert fast.bad_lines == 2
    started = time.monotonic()
    assert list(JsonLinesDriver(path, speed=10).read()) == expected  # 2 s of data at 10x
    assert 0.15 <= time.monotonic() - started < 2


def test_open_driver_names(tmp_path: Path) -> None:
    assert isinstance(open_driver("line", "gw-1"), LineDriver)
    (tmp_path / "x.jsonl").write_text("")
    assert isinstance(open_driver(f"jsonl:{tmp_path}/x.jsonl", "gw-1", 0), JsonLinesDriver)
    with pytest.raises(ValueError, match="no replay file"):
        open_driver(f"jsonl:{tmp_path}/missing.jsonl", "gw-1")
    with pytest.raises(ValueError, match="unknown driver"):
        open_driver("serial", "gw-1")
    with pytest.raises(ValueError, match="needs a file"):
        open_driver("jsonl", "gw-1")


def test_the_simulator_driver_yields_this_gateways_sensors_only() -> None:
    driver = open_driver("simulator:small", "gw-d01-water", speed=1e6)
    records = []
    for record in driver.read():
        records.append(record)
        if len(records) >= 50:
            driver.close()
            break
    mine = {s.id for s in build_manifest(small_city()).sensors if s.gateway_id == "gw-d01-water"}
    assert {r.name.split("/")[0] for r in records} <= mine
    assert len(records) == 50
    with pytest.raises(ValueError, match="no sensor"):
        open_driver("simulator:small", "gw-nowhere")


# -- settings -----------------------------------------------------------------------------


def test_settings_file_then_environment_then_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'gateway_id = "gw-file"\nbroker_url = "mqtts://u:p@broker.example:8884"\n'
        'pack_max_records = 7\ndriver = "line"\n'
    )
    monkeypatch.setenv("URBANPULSE_GATEWAY_PACK_MAX_RECORDS", "9")
    monkeypatch.setenv("URBANPULSE_GATEWAY_DRIVER", "jsonl:env.jsonl")
    settings = GatewaySettings.load(config, driver="jsonl:cli.jsonl")
    assert settings.gateway_id == "gw-file"
    assert settings.pack_max_records == 9
    assert settings.driver == "jsonl:cli.jsonl"
    options = settings.publisher_options()
    assert (options.host, options.port, options.username, options.password) == (
        "broker.example",
        8884,
        "u",
        "p",
    )
    assert options.tls is not None
    with pytest.raises(ValueError, match="gateway id"):
        GatewaySettings.load(None, gateway_id="not/ok")


# -- end to end ---------------------------------------------------------------------------


def test_end_to_end_every_record_arrives_exactly_once(
    tmp_path: Path, mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    gateway_id = f"gw-{uuid.uuid4().hex[:12]}"
    subscriber = mqtt_connect(mqtt_broker, subscribe=up_topic(gateway_id))
    path = tmp_path / "replay.jsonl"
    expected = write_jsonl(path, sensors=3, readings=25)  # 75 records, 3 per sensor-pack of 10
    status_file = tmp_path / "status.json"
    settings = GatewaySettings(
        gateway_id=gateway_id,
        broker_url=mqtt_broker.url,
        outbox_path=tmp_path / "outbox.sqlite",
        pack_max_records=10,
        pack_max_age_s=0.5,
        status_file=status_file,
        status_interval_s=0.2,
        drain_timeout_s=10,
        receipts=False,  # a bare broker: no platform sends receipts
        driver=f"jsonl:{path}",
        speed=0,
    )
    gateway = GatewayApp(settings, open_driver(settings.driver, gateway_id, settings.speed))
    thread = threading.Thread(target=gateway.run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()

    packs = 3 * 3  # per sensor: 10 + 10 + 5
    messages = subscriber.wait_for(packs)
    time.sleep(0.3)  # nothing more should come
    received = [r for m in subscriber.messages for r in decode(bytes(m.payload), time.time())]
    assert len(subscriber.messages) == packs
    assert sorted(received, key=lambda r: (r.name, r.time)) == sorted(
        expected, key=lambda r: (r.name, r.time)
    )
    assert len(messages) == packs
    status = json.loads(status_file.read_text())
    assert status["outbox_depth"] == 0
    assert status["acknowledged"] == packs
    assert status["counters"]["records_read"] == len(expected)
    assert status["counters"]["bad_lines"] == 2
    assert status["last_publish_at"] is not None


def test_the_gateway_command_stops_cleanly_on_sigterm(
    tmp_path: Path, mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    """A partial pack goes to the outbox and out on SIGTERM; the status file says so."""
    gateway_id = f"gw-{uuid.uuid4().hex[:12]}"
    subscriber = mqtt_connect(mqtt_broker, subscribe=up_topic(gateway_id))
    status_file = tmp_path / "status.json"
    env = {
        "URBANPULSE_GATEWAY_BROKER_URL": mqtt_broker.url,
        "URBANPULSE_GATEWAY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite"),
        "URBANPULSE_GATEWAY_STATUS_FILE": str(status_file),
        "URBANPULSE_GATEWAY_PACK_MAX_AGE_S": "3600",
        "URBANPULSE_GATEWAY_RECEIPTS": "false",  # a bare broker: no platform sends receipts
        "PATH": "/usr/bin:/bin",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "gateway",
            "--driver",
            "line",
            "--gateway-id",
            gateway_id,
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert process.stdin is not None
    process.stdin.write("s1 flow 1.5 m3/s 1750000000\ns1 flow oops\ns1 flow 2.5 m3/s 1750000001\n")
    process.stdin.flush()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if (
            status_file.exists()
            and json.loads(status_file.read_text())["counters"]["records_read"] == 2
        ):
            break
        time.sleep(0.1)
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    (message,) = subscriber.wait_for(1)
    assert [r.value for r in decode(bytes(message.payload), time.time())] == [1.5, 2.5]
    status = json.loads(status_file.read_text())
    assert status["outbox_depth"] == 0
    assert status["counters"]["bad_lines"] == 1


def test_gateway_help_runs_without_the_server_libraries() -> None:
    result = _gateway_only("gateway", "--help")
    assert result.returncode == 0, result.stderr
    assert "--driver" in result.stdout


def test_only_the_sensors_attached_to_the_gateway_are_published(
    tmp_path: Path, mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    gateway_id = f"gw-{uuid.uuid4().hex[:12]}"
    subscriber = mqtt_connect(mqtt_broker, subscribe=up_topic(gateway_id))
    path = tmp_path / "replay.jsonl"
    expected = write_jsonl(path, sensors=3, readings=10)
    settings = GatewaySettings(
        gateway_id=gateway_id,
        broker_url=mqtt_broker.url,
        outbox_path=tmp_path / "outbox.sqlite",
        pack_max_records=10,
        status_file=None,
        drain_timeout_s=10,
        receipts=False,  # a bare broker: no platform sends receipts
        driver=f"jsonl:{path}",
        speed=0,
        sensors=["s1"],
    )
    gateway = GatewayApp(settings, open_driver(settings.driver, gateway_id, settings.speed))
    gateway.run()
    subscriber.wait_for(1)
    time.sleep(0.3)
    received = [r for m in subscriber.messages for r in decode(bytes(m.payload), time.time())]
    assert sorted(r.time for r in received) == sorted(
        r.time for r in expected if r.name == "s1/flow"
    )
    assert {r.name for r in received} == {"s1/flow"}
    assert gateway.counters.not_attached == 20
