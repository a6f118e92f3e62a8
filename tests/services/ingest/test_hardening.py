"""Issue 11, through a real broker and a real database: one message must not cost gigabytes, a
spoofer must not pre-empt real readings, and a retained pack is not news.

Each gateway id is this test's own (``gw-<random>``): the workers of other tests subscribe to
every gateway, and a retained message stays on the broker the whole session unless cleared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway import topics
from gateway.limits import MAX_PACK_BYTES, MAX_PACK_RECORDS
from gateway.senml import Record, encode
from services.ingest import maintenance as maintenance_module
from services.ingest import quarantine
from services.ingest.cli.ingest import worker_config
from services.ingest.decode import open_message, prepare
from services.ingest.maintenance import Maintenance
from services.ingest.metrics import IngestMetrics
from services.ingest.sensor_directory import SensorDirectory
from services.ingest.session import Message
from services.ingest.validate import Validator
from services.ingest.worker import IngestWorker
from services.settings import SettingsError, load_settings
from services.storage import quarantine as quarantine_table
from services.storage.quarantine import QuarantineFilter
from tests.fixtures.broker import BrokerUnderTest, MqttConnect

from .conftest import MakeCity, StartWorker, Workers

ROOT = Path(__file__).resolve().parents[3]
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def city(make_city: MakeCity, gateway_id: str) -> tuple[str, Conn]:
    """This test's gateway owning feeder meters fdr-0..fdr-2."""
    return make_city([gateway_id], {f"fdr-{i}": gateway_id for i in range(3)})


@pytest.fixture
def start_worker(workers: Workers) -> StartWorker:
    """A worker on a plain subscription (every broker we test with keeps those), started once
    the retained burst of other tests' messages is over."""

    def start(database_url: str, **options: object) -> IngestWorker:
        worker = workers.start(database_url, settle_s=0, session_expiry_s=60, **options)
        _settle(worker)
        return worker

    return start


# The session's broker is shared: a worker subscribing to every gateway's topics first receives
# what other tests left retained there (gateway statuses, mostly). Each test counts the messages
# that came after that burst.
_ARRIVED_BEFORE: dict[int, int] = {}


def _settle(worker: IngestWorker, quiet_s: float = 0.5, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    seen, since = worker.stats.messages, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.05)
        if worker.stats.messages != seen:
            seen, since = worker.stats.messages, time.monotonic()
    _ARRIVED_BEFORE[id(worker)] = seen


def _new_messages(worker: IngestWorker) -> int:
    return worker.stats.messages - _ARRIVED_BEFORE[id(worker)]


def _voltages(sensor: str, start: float, values: list[float]) -> bytes:
    return encode(
        Record(name=f"{sensor}/voltage", time=start + i, unit="V", value=v)
        for i, v in enumerate(values)
    )


def _publish(client: MqttConnect, broker: BrokerUnderTest, topic: str, *payloads: bytes) -> None:
    publisher = client(broker)
    for payload in payloads:
        publisher.client.publish(topic, payload, qos=1).wait_for_publish(15)


def _wait(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _one(conn: Conn, query: str, *params: object) -> object:
    row = conn.execute(query, params).fetchone()
    conn.commit()
    assert row is not None
    return row[0]


def _readings(conn: Conn) -> list[tuple[object, ...]]:
    rows = conn.execute(
        "SELECT s.id, extract(epoch FROM r.time)::float8, r.value FROM readings r "
        "JOIN sensors s ON s.key = r.sensor_key ORDER BY 1, 2"
    ).fetchall()
    conn.commit()
    return rows


def _sample(worker: IngestWorker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


# -- Critical: quarantine amplification --------------------------------------------------------


def test_a_pack_of_many_rejected_records_costs_its_bytes_once_and_bounded_rows(
    city: tuple[str, Conn],
    start_worker: StartWorker,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    gateway_id: str,
) -> None:
    url, conn = city
    worker = start_worker(url)
    now = float(int(time.time()))
    # The attack of issue 11: 10,000 unknown sensors' records in one pack (~0.5 MB), which
    # made 10,000 rows each holding a copy of it. A good record first: it is still stored.
    records = [Record(name="fdr-0/voltage", time=now - 30, unit="V", value=230.0)]
    records += [
        Record(name=f"ghost-{i}/voltage", time=now - 30, unit="V", value=230.0)
        for i in range(9_999)
    ]
    payload = encode(records)
    assert len(payload) < MAX_PACK_BYTES
    _publish(mqtt_connect, mqtt_broker, topics.up_topic(gateway_id), payload)
    _wait(lambda: _new_messages(worker) >= 1 and worker.stats.batches >= 1)

    # 500 itemised and two entries saying what was left out, not one row a record.
    assert _one(conn, "SELECT count(*) FROM quarantine") == 502
    stored = conn.execute(
        "SELECT count(*), sum(bytes), sum(length(payload)) FROM quarantine_messages"
    ).fetchone()
    assert stored == (1, len(payload), len(payload))
    assert _one(conn, "SELECT payload FROM quarantine_messages") == payload
    assert quarantine_table.summary(conn) == {
        "unknown_sensor": 500,  # URBANPULSE_QUARANTINE_MAX_ENTRIES_PER_MESSAGE
        "too_many_records": 1,  # records past MAX_PACK_RECORDS, not looked at
        "too_many_rejects": 1,  # the unknown sensors past the 500 itemised
    }
    [rejects] = quarantine_table.list_entries(conn, QuarantineFilter(reason="too_many_rejects"))
    assert rejects.record_index is None
    assert f"{MAX_PACK_RECORDS - 1 - 500} more rejected records" in rejects.detail
    assert "unknown_sensor" in rejects.detail
    [excess] = quarantine_table.list_entries(conn, QuarantineFilter(reason="too_many_records"))
    assert f"from index {MAX_PACK_RECORDS} on ({10_000 - MAX_PACK_RECORDS})" in excess.detail
    itemised = quarantine_table.list_entries(
        conn, QuarantineFilter(reason="unknown_sensor"), limit=1000
    )
    assert sorted(e.record_index for e in itemised) == list(range(1, 501))  # type: ignore[type-var]
    assert {e.payload for e in itemised} == {payload}
    assert _readings(conn) == [("fdr-0", now - 30, 230.0)]
    assert _sample(worker, "urbanpulse_ingest_quarantined_total", reason="unknown_sensor") == 500


def test_replay_reads_a_shared_message_once_per_entry(
    city: tuple[str, Conn],
    start_worker: StartWorker,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    gateway_id: str,
) -> None:
    url, conn = city
    worker = start_worker(url)
    now = float(int(time.time()))
    payload = encode(
        [
            Record(name=f"new-{i % 3}/voltage", time=now - 60 + i, unit="V", value=230.0)
            for i in range(30)
        ]
    )
    _publish(mqtt_connect, mqtt_broker, topics.up_topic(gateway_id), payload)
    _wait(lambda: worker.stats.quarantined >= 30)
    assert _one(conn, "SELECT count(*) FROM quarantine_messages") == 1
    for i in range(3):
        conn.execute(
            "INSERT INTO sensors (id, kind, domain, gateway_id) "
            "VALUES (%s, 'feeder_meter', 'energy', %s)",
            (f"new-{i}", gateway_id),
        )
    conn.commit()
    result = quarantine.replay(conn, reason="unknown_sensor")
    assert (result.examined, result.stored, result.still_bad) == (30, 30, [])
    assert len(_readings(conn)) == 30


def test_the_quarantine_is_pruned_by_age_then_by_size_replayed_first(
    make_database: Callable[[str], str],
) -> None:
    url = make_database("partitioned")
    now = time.time()
    with psycopg.connect(url) as conn:

        def message(age_s: float, size: int, replayed: bool) -> quarantine.Quarantined:
            item = quarantine.Quarantined(now - age_s, "ssc/v1/gw-p/up", b"x" * size)
            item.entries = [quarantine.Rejected("gw-p", "s", 0, "unknown_sensor", "")] * 2
            quarantine_table.store(conn, [item])
            if replayed:
                conn.execute(
                    "UPDATE quarantine SET replayed_at = now() "
                    "WHERE message_id = (SELECT max(id) FROM quarantine_messages)"
                )
            return item

        message(40 * 86400, 10, replayed=False)  # 1: past a 30-day retention
        message(3000, 400, replayed=False)  # 2: the oldest still waiting
        message(2000, 400, replayed=True)  # 3: replayed: goes before 2
        message(1000, 400, replayed=False)  # 4
        message(10, 400, replayed=True)  # 5: replayed, newest
        conn.commit()
        ids = [
            int(i)
            for (i,) in conn.execute("SELECT id FROM quarantine_messages ORDER BY id").fetchall()
        ]
        conn.commit()
        metrics = IngestMetrics()
        # Through the worker's maintenance loop, as in production.
        maintenance = Maintenance(
            url,
            "partitioned",
            rollup_every_s=0.1,
            maintain_every_s=3600,
            metrics=metrics,
            quarantine_retention_s=30 * 86400,
            quarantine_max_bytes=700,
        )
        maintenance.start()
        try:
            _wait(
                lambda: (
                    (
                        metrics.registry.get_sample_value(
                            "urbanpulse_ingest_quarantine_pruned_total"
                        )
                        or 0
                    )
                    >= 4
                ),
                timeout=15,
            )
        finally:
            maintenance.stop()
        left = [
            int(i)
            for (i,) in conn.execute("SELECT id FROM quarantine_messages ORDER BY id").fetchall()
        ]
        # 1600 bytes were left after the age cut; 700 allowed: both replayed ones went first
        # (800, newest included), then the oldest still waiting.
        assert left == [ids[3]]
        assert _one(conn, "SELECT count(*) FROM quarantine") == 2  # its entries; others cascaded
        assert quarantine_table.prune(conn, retention=timedelta(days=30), max_bytes=0) == 0


def test_the_quarantine_and_the_ledger_are_pruned_at_the_maintenance_pace_not_each_round(
    make_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_database("partitioned")
    calls: list[str] = []
    real_quarantine, real_ledger = (
        maintenance_module.quarantine.prune,
        maintenance_module.ledger.prune,
    )

    def quarantine_prune(*args: Any, **kwargs: Any) -> int:
        calls.append("quarantine")
        return real_quarantine(*args, **kwargs)

    def ledger_prune(*args: Any, **kwargs: Any) -> int:
        calls.append("ledger")
        return real_ledger(*args, **kwargs)

    monkeypatch.setattr(maintenance_module.quarantine, "prune", quarantine_prune)
    monkeypatch.setattr(maintenance_module.ledger, "prune", ledger_prune)
    metrics = IngestMetrics()
    maintenance = Maintenance(
        url, "partitioned", rollup_every_s=0.05, maintain_every_s=3600, metrics=metrics
    )
    maintenance.start()
    try:
        _wait(
            lambda: (
                (
                    metrics.registry.get_sample_value(
                        "urbanpulse_ingest_rollup_refresh_seconds_count"
                    )
                    or 0
                )
                >= 4
            ),
            timeout=15,
        )
    finally:
        maintenance.stop()
    # The first round prunes (a worker's start), the next ones only refresh the rollups.
    assert calls == ["quarantine", "ledger"]


def test_the_brokers_we_ship_refuse_what_the_platform_refuses(
    mqtt_broker: BrokerUnderTest,
) -> None:
    lines = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    settings = dict(
        line.split(maxsplit=1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert settings["max_packet_size"] == str(MAX_PACK_BYTES)
    handle = mqtt_broker.handle
    if handle is None:
        pytest.skip("an external broker: its configuration is not ours")
    config = next(handle.data_dir.glob("*.conf"), None) or next(handle.data_dir.glob("*.toml"))
    text = config.read_text()
    assert f"max_packet_size {MAX_PACK_BYTES}" in text or (
        text.count(f"max_payload_size = {MAX_PACK_BYTES}") == 2
    )


def test_a_pack_past_the_limit_is_refused_by_the_broker_and_the_rest_flows(
    city: tuple[str, Conn],
    start_worker: StartWorker,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    gateway_id: str,
) -> None:
    url, conn = city
    worker = start_worker(url)
    topic = topics.up_topic(gateway_id)
    attacker = mqtt_connect(mqtt_broker)
    attacker.client.publish(topic, b"[" + b" " * MAX_PACK_BYTES + b"]", qos=1)
    now = float(int(time.time()))
    _publish(mqtt_connect, mqtt_broker, topic, _voltages("fdr-0", now - 5, [230.0]))
    _wait(lambda: worker.stats.stored >= 1)
    time.sleep(0.5)  # the big one would have landed by now
    assert _new_messages(worker) == 1
    assert quarantine_table.summary(conn) == {}


def test_what_a_broker_lets_through_past_the_limits_is_one_entry(
    city: tuple[str, Conn], gateway_id: str
) -> None:
    """A broker not configured as ours may carry a larger pack: the worker keeps one entry
    and the first MAX_PACK_BYTES of it (straight through its decoding step and the store)."""
    _url, conn = city
    now = time.time()
    big = encode(
        Record(name=f"ghost-{i}/voltage", time=now - 5, unit="V", value=1.0) for i in range(40_000)
    )
    assert len(big) > MAX_PACK_BYTES
    message = Message(1, 1, 1, topics.up_topic(gateway_id), big, now)
    prepared = prepare([open_message(message)], SensorDirectory(conn).snapshot, Validator())
    quarantine_table.store(conn, prepared.quarantine)
    conn.commit()
    [entry] = quarantine_table.list_entries(conn)
    assert (entry.reason, entry.record_index, entry.payload) == (
        "pack_too_large",
        None,
        big[:MAX_PACK_BYTES],
    )
    assert _one(conn, "SELECT bytes FROM quarantine_messages") == len(big)


def test_the_settings_reach_the_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URBANPULSE_MAX_FUTURE_SKEW", "PT2S")
    monkeypatch.setenv("URBANPULSE_QUARANTINE_MAX_ENTRIES_PER_MESSAGE", "20")
    monkeypatch.setenv("URBANPULSE_QUARANTINE_RETENTION", "P7D")
    monkeypatch.setenv("URBANPULSE_QUARANTINE_MAX_BYTES", "1000000")
    config = worker_config(
        load_settings(), database_url="", mqtt_url="", client_id="", username=None, password=None
    )
    assert (
        config.policy.max_future_s,
        config.max_entries_per_message,
        config.quarantine_retention_s,
        config.quarantine_max_bytes,
    ) == (2.0, 20, 7 * 86400.0, 1_000_000)
    monkeypatch.setenv("URBANPULSE_QUARANTINE_MAX_ENTRIES_PER_MESSAGE", "0")
    with pytest.raises(SettingsError, match="URBANPULSE_QUARANTINE_MAX_ENTRIES_PER_MESSAGE"):
        load_settings()


# -- High: a spoofer must not pre-empt real readings --------------------------------------------


def test_a_reading_minutes_ahead_is_refused(
    city: tuple[str, Conn],
    start_worker: StartWorker,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    gateway_id: str,
) -> None:
    url, conn = city
    worker = start_worker(url)
    now = float(int(time.time()))
    # Two minutes ahead: within the old 300 s, so a spoofer's value stood there first.
    _publish(
        mqtt_connect,
        mqtt_broker,
        topics.up_topic(gateway_id),
        _voltages("fdr-1", now + 120, [199.0]),
        _voltages("fdr-1", now - 1, [230.0]),  # a clock a second fast is fine
    )
    _wait(lambda: _new_messages(worker) >= 2)
    assert _readings(conn) == [("fdr-1", now - 1, 230.0)]
    assert quarantine_table.summary(conn) == {"time_in_future": 1}


def test_a_different_value_at_a_stored_key_is_a_conflict_kept_for_an_operator(
    city: tuple[str, Conn],
    start_worker: StartWorker,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    gateway_id: str,
) -> None:
    url, conn = city
    worker = start_worker(url)
    t = float(int(time.time())) - 5
    topic = topics.up_topic(gateway_id)
    fake = _voltages("fdr-2", t, [199.0])
    real = encode(
        [
            Record(name="fdr-0/voltage", time=t, unit="V", value=231.0),  # 0: new, stored
            Record(name="fdr-2/voltage", time=t, unit="V", value=230.0),  # 1: collides
        ]
    )
    _publish(mqtt_connect, mqtt_broker, topic, fake)
    _wait(lambda: worker.stats.stored >= 1)
    _publish(mqtt_connect, mqtt_broker, topic, real, fake)  # and the fake redelivered
    _wait(lambda: _new_messages(worker) >= 3)
    # The first write stays; the real value waits in quarantine, with both values named.
    assert _readings(conn) == [("fdr-0", t, 231.0), ("fdr-2", t, 199.0)]
    [entry] = quarantine_table.list_entries(conn)
    assert (entry.reason, entry.sensor_id, entry.record_index, entry.payload) == (
        "conflict",
        "fdr-2",
        1,
        real,
    )
    assert "stored with 199.0" in entry.detail
    assert "says 230.0" in entry.detail
    # A redelivery of the same value is a duplicate, not a conflict.
    assert (worker.stats.conflicts, worker.stats.duplicates) == (1, 1)
    assert _sample(worker, "urbanpulse_ingest_records_conflict_total") == 1
    assert _sample(worker, "urbanpulse_ingest_quarantined_total", reason="conflict") == 1
    # Replay does not overwrite: the entry stays a conflict until an operator decides.
    result = quarantine.replay(conn, reason="conflict")
    assert [(b.id, b.reason) for b in result.still_bad] == [(entry.id, "conflict")]
    assert _readings(conn) == [("fdr-0", t, 231.0), ("fdr-2", t, 199.0)]


def test_a_message_with_rejects_and_a_conflict_gets_one_bound_on_its_entries(
    city: tuple[str, Conn],
    start_worker: StartWorker,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    gateway_id: str,
) -> None:
    url, conn = city
    worker = start_worker(url, max_entries_per_message=2)
    t = float(int(time.time())) - 5
    topic = topics.up_topic(gateway_id)
    _publish(mqtt_connect, mqtt_broker, topic, _voltages("fdr-2", t, [199.0]))
    _wait(lambda: worker.stats.stored >= 1)
    mixed = encode(
        [Record(name=f"ghost-{i}/voltage", time=t, unit="V", value=1.0) for i in range(3)]
        + [Record(name="fdr-2/voltage", time=t, unit="V", value=230.0)]  # 3: collides
    )
    _publish(mqtt_connect, mqtt_broker, topic, mixed)
    _wait(lambda: _new_messages(worker) >= 2 and worker.stats.conflicts >= 1)
    # Two itemised and one entry counting the rest, the conflict among them; bounded apart,
    # the rejects and the conflict made four.
    assert quarantine_table.summary(conn) == {"unknown_sensor": 2, "too_many_rejects": 1}
    [rest] = quarantine_table.list_entries(conn, QuarantineFilter(reason="too_many_rejects"))
    assert "2 more rejected records not itemised (unknown_sensor 1, conflict 1)" in rest.detail
    assert "the first at index 2" in rest.detail
    # The first pack went in by direct COPY; the key refused the second's, written again.
    assert _sample(worker, "urbanpulse_ingest_direct_batches_total") >= 1
    assert _sample(worker, "urbanpulse_ingest_fallback_batches_total") == 1


# -- Medium: a retained pack on an up topic ------------------------------------------------------


def test_a_retained_pack_on_up_is_ignored_at_every_subscribe_and_counted(
    city: tuple[str, Conn],
    start_worker: StartWorker,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    gateway_id: str,
) -> None:
    url, conn = city
    topic = topics.up_topic(gateway_id)
    now = float(int(time.time()))
    publisher = mqtt_connect(mqtt_broker)
    publisher.client.publish(
        topic, _voltages("ghost-r", now - 10, [1.0]), qos=1, retain=True
    ).wait_for_publish(15)
    try:
        for round_ in range(2):  # a worker (re)subscribing gets the retained copy each time
            worker = start_worker(url)
            marker = _voltages("fdr-0", now - 100 + round_, [230.0])
            publisher.client.publish(topic, marker, qos=1).wait_for_publish(15)
            # The retained copy came at the subscription; the marker after it (the earlier
            # worker, still running, takes the marker too: one of them stores it).
            _wait(lambda r=round_: len(_readings(conn)) == r + 1)  # type: ignore[misc]
            time.sleep(0.2)  # what the worker would wrongly have quarantined has landed by now
            assert quarantine_table.summary(conn) == {}
            # At least: other tests may have left retained packs on other gateways' topics.
            assert worker.stats.retained_ignored >= 1
            assert _sample(worker, "urbanpulse_ingest_retained_ignored_total") >= 1
        assert len(_readings(conn)) == 2
    finally:
        # An empty retained message clears it for the rest of the session.
        publisher.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(15)
