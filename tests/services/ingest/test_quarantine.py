"""The quarantine against a real database: list, summary, show, and replay once the cause is fixed.

Entries are made by ``_ingest``, which runs a message through the same functions as the worker
(topic parsing, ``decode_salvaging``, ``validate``, ``original_index``) and writes the same rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from gateway import topics
from gateway.errors import SenMLError, TopicError
from gateway.senml import Record, encode
from services.ingest import quarantine
from services.ingest.salvage import decode_salvaging
from services.ingest.sensor_directory import SensorDirectory
from services.ingest.validate import Policy, Reason, validate
from services.storage import quarantine as quarantine_table
from services.storage import retention
from services.storage.quarantine import QuarantineFilter
from services.storage.retention_policy import make_policy
from services.storage.writer import ReadingWriter

from .conftest import MakeCity

ROOT = Path(__file__).resolve().parents[3]
Conn = psycopg.Connection[tuple[object, ...]]
GARBAGE = b"\x00garbage{\xff\xfe"


@pytest.fixture
def city(make_city: MakeCity) -> tuple[str, Conn]:
    """Gateways gw-a and gw-b; gw-a owns feeder meters fdr-0..fdr-2."""
    return make_city(["gw-a", "gw-b"], {f"fdr-{i}": "gw-a" for i in range(3)})


def _register(conn: Conn, sensor: str, kind: str = "feeder_meter", gateway: str = "gw-a") -> None:
    conn.execute(
        "INSERT INTO sensors (id, kind, domain, gateway_id) VALUES (%s, %s, 'energy', %s)",
        (sensor, kind, gateway),
    )
    conn.commit()


def _ingest(conn: Conn, topic: str, payload: bytes, received_at: float) -> None:
    """One message through the worker's steps (services/ingest/commit.py, ``Committer``)."""
    item = quarantine.Quarantined(received_at, topic, payload)

    def q(
        gateway: str | None,
        index: int | None,
        reason: Reason,
        detail: str,
        sensor: str | None = None,
    ) -> None:
        item.entries.append(quarantine.Rejected(gateway, sensor, index, reason, detail))

    try:
        gateway = topics.parse_topic(topic).gateway_id
    except TopicError as exc:
        q(None, None, Reason.BAD_TOPIC, str(exc))
        gateway = None
    if gateway is not None:
        try:
            salvaged = decode_salvaging(payload, received_at)
        except SenMLError as exc:
            q(gateway, exc.index, Reason.NOT_SENML, f"{exc.reason}: {exc}")
        else:
            for bad in salvaged.bad:
                q(gateway, bad.index, Reason.NOT_SENML, f"{bad.error.reason}: {bad.error}")
            result = validate(
                gateway, salvaged.records, SensorDirectory(conn).snapshot, received_at, Policy()
            )
            ReadingWriter(conn, "partitioned").write(result.rows, result.extras)
            for r in result.rejects:
                q(gateway, salvaged.original_index(r.index), r.reason, r.detail, r.sensor_id)
    quarantine_table.store(conn, [item])
    conn.commit()


def _voltages(sensor: str, start: float, values: list[float]) -> bytes:
    return encode(
        Record(name=f"{sensor}/voltage", time=start + i, unit="V", value=v)
        for i, v in enumerate(values)
    )


def _readings(conn: Conn) -> list[tuple[object, ...]]:
    rows = conn.execute(
        "SELECT s.id, extract(epoch FROM r.time)::float8, r.value FROM readings r "
        "JOIN sensors s ON s.key = r.sensor_key ORDER BY 1, 2"
    ).fetchall()
    conn.commit()
    return rows


def _ids(entries: list[quarantine_table.Entry]) -> list[int]:
    return [e.id for e in entries]


def _replayed(conn: Conn) -> dict[int, bool]:
    rows = conn.execute("SELECT id, replayed_at IS NOT NULL FROM quarantine ORDER BY id")
    result = {int(i): bool(r) for i, r in rows.fetchall()}  # type: ignore[call-overload]
    conn.commit()
    return result


@pytest.fixture
def mixed(city: tuple[str, Conn]) -> tuple[str, Conn, float]:
    """Five entries: two unknown-sensor records, a wrong gateway, garbage, a bad topic."""
    url, conn = city
    now = float(int(time.time()))
    up_a, up_b = topics.up_topic("gw-a"), topics.up_topic("gw-b")
    _ingest(conn, up_a, _voltages("ghost-1", now - 7800, [230.0, 231.0]), now - 7200)  # ids 1, 2
    _ingest(conn, up_b, _voltages("fdr-0", now - 300, [229.0]), now - 3600)  # 3
    _ingest(conn, up_a, GARBAGE, now - 60)  # 4
    _ingest(conn, "ssc/v1/gw-a/sideways", b"[]", now - 30)  # 5
    return url, conn, now


def test_list_filters_newest_first(mixed: tuple[str, Conn, float]) -> None:
    _, conn, now = mixed
    everything = quarantine_table.list_entries(conn)
    assert [(e.reason, e.record_index) for e in everything] == [
        ("bad_topic", None),
        ("not_senml", None),
        ("wrong_gateway", 0),
        ("unknown_sensor", 1),
        ("unknown_sensor", 0),
    ]
    ids = _ids(everything)[::-1]
    assert (
        _ids(quarantine_table.list_entries(conn, QuarantineFilter(reason=Reason.UNKNOWN_SENSOR)))
        == ids[1::-1]
    )
    assert _ids(quarantine_table.list_entries(conn, QuarantineFilter(gateway="gw-b"))) == [ids[2]]
    assert _ids(
        quarantine_table.list_entries(conn, QuarantineFilter(sensor="ghost-1"), limit=1)
    ) == [ids[1]]
    since, until = _utc(now - 3600), _utc(now - 60)
    assert _ids(quarantine_table.list_entries(conn, QuarantineFilter(since=since))) == ids[:1:-1]
    assert _ids(
        quarantine_table.list_entries(conn, QuarantineFilter(since=since, until=until))
    ) == [ids[2]]
    garbage = quarantine_table.list_entries(conn, QuarantineFilter(reason="not_senml"))[0]
    assert garbage.payload == GARBAGE
    assert garbage.received_at.timestamp() == now - 60
    assert quarantine_table.get(conn, garbage.id) == garbage
    assert quarantine_table.get(conn, 10**9) is None


def test_summary_counts_by_reason(mixed: tuple[str, Conn, float]) -> None:
    _, conn, now = mixed
    assert quarantine_table.summary(conn) == {
        "unknown_sensor": 2,
        "bad_topic": 1,
        "not_senml": 1,
        "wrong_gateway": 1,
    }
    assert quarantine_table.summary(
        conn, QuarantineFilter(gateway="gw-a", since=_utc(now - 100))
    ) == {"not_senml": 1}


def test_replay_after_registering_stores_once_and_marks_replayed(
    mixed: tuple[str, Conn, float],
) -> None:
    _, conn, now = mixed
    ids = sorted(_ids(quarantine_table.list_entries(conn)))
    assert quarantine.replay(conn, sensor_id="ghost-1").still_bad == [
        quarantine.StillBad(i, "unknown_sensor", "sensor 'ghost-1' is not registered")
        for i in ids[:2]
    ]
    assert _readings(conn) == []
    _register(conn, "ghost-1")
    result = quarantine.replay(conn, sensor_id="ghost-1")
    assert (result.examined, result.stored, result.duplicates, result.still_bad) == (2, 2, 0, [])
    assert _readings(conn) == [("ghost-1", now - 7800, 230.0), ("ghost-1", now - 7799, 231.0)]
    assert _replayed(conn) == {
        ids[0]: True,
        ids[1]: True,
        ids[2]: False,
        ids[3]: False,
        ids[4]: False,
    }
    assert _ids(quarantine_table.list_entries(conn, QuarantineFilter(sensor="ghost-1"))) == []
    assert (
        len(
            quarantine_table.list_entries(
                conn, QuarantineFilter(sensor="ghost-1", include_replayed=True)
            )
        )
        == 2
    )

    again = quarantine.replay(conn, sensor_id="ghost-1")
    assert (again.examined, again.stored, again.duplicates, again.still_bad) == (0, 0, 0, [])
    assert len(_readings(conn)) == 2


def test_a_cause_not_fixed_keeps_the_entry_with_todays_reason(
    mixed: tuple[str, Conn, float],
) -> None:
    _, conn, _ = mixed
    wrong_gateway = quarantine_table.list_entries(conn, QuarantineFilter(reason="wrong_gateway"))[
        0
    ].id
    assert quarantine.replay(conn, ids=[wrong_gateway]).still_bad == [
        quarantine.StillBad(
            wrong_gateway, "wrong_gateway", "sensor 'fdr-0' belongs to gateway 'gw-a', not 'gw-b'"
        )
    ]
    # Registered, but on the other gateway: the reason the operator sees is today's.
    _register(conn, "ghost-1", gateway="gw-b")
    result = quarantine.replay(conn, sensor_id="ghost-1")
    assert {bad.reason for bad in result.still_bad} == {"wrong_gateway"}
    assert (result.examined, result.stored) == (2, 0)
    assert not any(_replayed(conn).values())
    assert {
        e.reason for e in quarantine_table.list_entries(conn, QuarantineFilter(sensor="ghost-1"))
    } == {"unknown_sensor"}


def test_a_corrected_kind_lets_the_record_through(city: tuple[str, Conn]) -> None:
    _, conn = city
    now = float(int(time.time()))
    _register(conn, "fdr-9", kind="air_quality")  # a typo in the registry
    _ingest(conn, topics.up_topic("gw-a"), _voltages("fdr-9", now - 60, [230.0]), now)
    assert quarantine_table.summary(conn) == {"unknown_quantity": 1}
    conn.execute("UPDATE sensors SET kind = 'feeder_meter' WHERE id = 'fdr-9'")
    conn.commit()
    result = quarantine.replay(conn, reason=Reason.UNKNOWN_QUANTITY)
    assert (result.examined, result.stored, result.still_bad) == (1, 1, [])
    assert _readings(conn) == [("fdr-9", now - 60, 230.0)]


def test_whole_messages_are_skipped(mixed: tuple[str, Conn, float]) -> None:
    _, conn, _ = mixed
    result = quarantine.replay(conn, reason="not_senml")
    assert (result.examined, result.skipped_whole_messages, result.still_bad) == (0, 1, [])
    assert quarantine.replay(conn, reason="bad_topic").skipped_whole_messages == 1
    assert not any(_replayed(conn).values())


def test_a_salvaged_pack_replays_the_record_at_its_original_index(city: tuple[str, Conn]) -> None:
    _, conn = city
    now = float(int(time.time()))
    pack = [
        {"bn": "fdr-0/", "bt": now - 10},  # 0: base fields only, no record of its own
        {"n": "voltage", "u": "V", "v": 230.0},  # 1: stored
        {"n": "voltage", "u": "V", "v": "231", "t": 1},  # 2: not SenML (v is a string)
        {"bn": "ghost-1/", "n": "voltage", "u": "V", "v": 232.0, "t": 2},  # 3: unknown sensor
        {"bn": "fdr-1/", "n": "voltage", "u": "V", "v": 233.0, "t": 3},  # 4: stored
    ]
    _ingest(conn, topics.up_topic("gw-a"), json.dumps(pack).encode(), now)
    entries = {e.record_index: e for e in quarantine_table.list_entries(conn)}
    assert {i: e.reason for i, e in entries.items()} == {2: "not_senml", 3: "unknown_sensor"}
    assert len(_readings(conn)) == 2
    _register(conn, "ghost-1")
    result = quarantine.replay(conn, ids=[entries[2].id, entries[3].id])
    assert (result.examined, result.stored, result.duplicates) == (2, 1, 0)
    assert [(bad.id, bad.reason) for bad in result.still_bad] == [(entries[2].id, "not_senml")]
    assert ("ghost-1", now - 8, 232.0) in _readings(conn)


def test_relative_times_resolve_against_the_receive_time(city: tuple[str, Conn]) -> None:
    _, conn = city
    received = float(int(time.time())) - 86400
    pack = [{"bn": "ghost-2/", "bt": -120, "n": "voltage", "u": "V", "v": 230.0}]
    _ingest(conn, topics.up_topic("gw-a"), json.dumps(pack).encode(), received)
    _register(conn, "ghost-2")
    assert quarantine.replay(conn, sensor_id="ghost-2").stored == 1
    assert _readings(conn) == [("ghost-2", received - 120, 230.0)]


def test_a_redelivered_message_quarantined_twice_is_stored_once(city: tuple[str, Conn]) -> None:
    _, conn = city
    now = float(int(time.time()))
    payload = _voltages("ghost-3", now - 30, [230.0])
    _ingest(conn, topics.up_topic("gw-a"), payload, now)
    _ingest(conn, topics.up_topic("gw-a"), payload, now + 1)  # the broker sent it again
    _register(conn, "ghost-3")
    result = quarantine.replay(conn, sensor_id="ghost-3")
    assert (result.examined, result.stored, result.duplicates) == (2, 1, 1)
    assert all(_replayed(conn).values())


def test_time_is_judged_as_of_reception_and_retention_as_of_now(city: tuple[str, Conn]) -> None:
    _, conn = city
    retention.set_policy(conn, make_policy("kind", "feeder_meter", 1), "test")
    conn.commit()
    now = float(int(time.time()))
    received = now - 1.5 * 86400
    # An hour ahead of the gateway's clock when received (in the past by now): still refused.
    _ingest(conn, topics.up_topic("gw-a"), _voltages("ghost-4", received + 3600, [1.0]), received)
    # Within the kind's one day of raw retention when received, past it by now (the default
    # window, 400 days, would still keep it).
    _ingest(conn, topics.up_topic("gw-a"), _voltages("ghost-4", received - 60, [2.0]), received)
    _register(conn, "ghost-4")
    result = quarantine.replay(conn, sensor_id="ghost-4", now=now)
    assert [bad.reason for bad in result.still_bad] == ["time_in_future", "time_too_old"]
    assert result.stored == 0
    too_old = result.still_bad[1].detail
    assert too_old.startswith("past the retention now: time ")
    assert too_old.endswith("kept 1 days (retention policy kind feeder_meter)")

    retention.set_policy(conn, make_policy("kind", "feeder_meter", 2), "test")
    conn.commit()
    result = quarantine.replay(conn, sensor_id="ghost-4", now=now)
    assert (result.stored, [bad.reason for bad in result.still_bad]) == (1, ["time_in_future"])


# -- the command line ----------------------------------------------------------------------


def _cli(url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("URBANPULSE_")}
    env["COLUMNS"] = "200"  # rich wraps table cells to the terminal width
    if url is not None:
        env["URBANPULSE_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "quarantine", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_cli_list(mixed: tuple[str, Conn, float]) -> None:
    url, conn, _ = mixed
    result = _cli(url, "list")
    assert result.returncode == 0, result.stderr
    for entry in quarantine_table.list_entries(conn):
        assert f"│ {entry.id} " in result.stdout
    assert "ghost-1" in result.stdout
    assert "5 entries: unknown_sensor 2, bad_topic 1, not_senml 1, wrong_gateway 1" in result.stdout
    result = _cli(url, "list", "--reason", "unknown_sensor", "--limit", "1", "--since", "1d")
    assert result.returncode == 0, result.stderr
    assert "2 entries (showing 1): unknown_sensor 2" in result.stdout
    result = _cli(url, "list", "--since", "yesterday")
    assert result.returncode == 2
    assert "ISO 8601" in result.stderr


def test_cli_show_binary_and_text_payloads(mixed: tuple[str, Conn, float]) -> None:
    url, conn, _ = mixed
    garbage = quarantine_table.list_entries(conn, QuarantineFilter(reason="not_senml"))[0].id
    result = _cli(url, "show", str(garbage))
    assert result.returncode == 0, result.stderr
    assert "whole message" in result.stdout
    assert "hex dump" in result.stdout
    assert "00000000  00 67 61 72 62 61 67 65 7b ff fe" in result.stdout
    assert "|.garbage{..|" in result.stdout
    assert "not SenML: not_json" in result.stdout
    record = quarantine_table.list_entries(conn, QuarantineFilter(sensor="ghost-1"))[0]
    result = _cli(url, "show", str(record.id))
    assert result.returncode == 0, result.stderr
    assert "UTF-8 text" in result.stdout
    assert record.payload.decode() in result.stdout
    assert f"▶ │ {record.record_index} " in result.stdout
    assert "ghost-1/voltage" in result.stdout
    assert "sensor 'ghost-1' is not registered" in result.stdout


def test_cli_show_unknown_id_and_no_database(mixed: tuple[str, Conn, float]) -> None:
    url, _, _ = mixed
    result = _cli(url, "show", "999999")
    assert result.returncode == 2
    assert "no quarantine entry with id 999999" in result.stderr
    result = _cli(None, "show", "1")
    assert result.returncode == 2
    assert "URBANPULSE_DATABASE_URL" in result.stderr


def test_cli_replay(mixed: tuple[str, Conn, float]) -> None:
    url, conn, _ = mixed
    result = _cli(url, "replay")
    assert result.returncode == 2
    assert "at least one of --sensor, --reason, --id" in result.stderr
    result = _cli(url, "replay", "--sensor", "ghost-1")
    assert result.returncode == 0, result.stderr
    assert "examined 2, stored 0, duplicates 0, still bad 2" in result.stdout
    assert "unknown_sensor" in result.stdout
    _register(conn, "ghost-1")
    result = _cli(url, "replay", "--sensor", "ghost-1", "--reason", "unknown_sensor")
    assert result.returncode == 0, result.stderr
    assert "examined 2, stored 2, duplicates 0, still bad 0" in result.stdout
    result = _cli(url, "replay", "--sensor", "ghost-1")
    assert "examined 0, stored 0, duplicates 0, still bad 0" in result.stdout
    ids = [
        str(e.id) for e in quarantine_table.list_entries(conn, QuarantineFilter(reason="not_senml"))
    ]
    result = _cli(url, "replay", *(f"--id={i}" for i in ids))
    assert result.returncode == 0, result.stderr
    assert "examined 0, stored 0, duplicates 0, still bad 0, whole messages skipped 1" in (
        result.stdout
    )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_bounding_entries_again_counts_what_the_first_bound_left_out() -> None:
    def reject(index: int, reason: str) -> quarantine.Rejected:
        return quarantine.Rejected("gw", "s", index, reason, "")

    first = quarantine.bounded([reject(i, "unknown_sensor") for i in range(5)], 2)
    again = quarantine.bounded([*first, reject(9, "conflict"), reject(10, "conflict")], 2)
    assert again[:2] == first[:2]
    [rest] = again[2:]
    assert rest.reason == "too_many_rejects"
    assert rest.detail.startswith(
        "5 more rejected records not itemised (unknown_sensor 3, conflict 2); the first at index 2"
    )
