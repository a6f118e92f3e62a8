"""The commit (services/ingest/commit.py) on a real PostgreSQL, with no broker: batches prepared
by the pure core as the worker prepares them, written by the Committer."""

from __future__ import annotations

import threading
import time

import psycopg

from gateway import topics
from gateway.receipts import PackId
from gateway.senml import Record, encode
from services.ingest.commit import Batch, Committer
from services.ingest.decode import add_message, open_message
from services.ingest.metrics import IngestMetrics, Stats
from services.ingest.sensor_directory import SensorDirectory
from services.ingest.session import Message
from services.ingest.validate import Validator
from services.storage.modes import storage_mode

from .conftest import Conn, MakeCity


def _batch(conn: Conn, messages: list[Message]) -> Batch:
    batch = Batch()
    snapshot, validator = SensorDirectory(conn).snapshot, Validator()
    for message in messages:
        batch.messages.append(message)
        add_message(batch.decoded, open_message(message), snapshot, validator)
    return batch


def _message(gateway: str, records: list[Record], pack: PackId | None, mid: int = 1) -> Message:
    properties = pack.properties() if pack else None
    return Message(
        1, mid, 1, topics.up_topic(gateway), encode(records), time.time(), False, properties
    )


def _committer(url: str, stats: Stats) -> Committer:
    conn = psycopg.connect(url)
    return Committer(
        conn,
        storage_mode(conn),
        database_url=url,
        on_error=lambda _exc: None,
        stats=stats,
        metrics=IngestMetrics(),
        max_entries_per_message=500,
    )


def _count(conn: Conn, sql: str) -> int:
    value = conn.execute(sql).fetchone()
    conn.commit()
    assert value is not None
    return int(str(value[0]))


def test_a_pack_committed_twice_writes_once_and_both_copies_are_receipted(
    make_city: MakeCity,
) -> None:
    url, conn = make_city(["gw-a"], {"fdr-0": "gw-a"})
    now = float(int(time.time()))
    records = [
        Record(name="fdr-0/voltage", time=now - 5 + i, unit="V", value=230.0) for i in range(3)
    ]
    pack = PackId("s1", 7, 7)
    stats = Stats()
    committer = _committer(url, stats)
    try:
        first = _batch(conn, [_message("gw-a", records, pack)])
        committer.store(first, threading.Event())
        # A redelivery of the same pack (its acknowledgement was lost): nothing is written.
        again = _batch(conn, [_message("gw-a", records, pack, mid=2)])
        committer.store(again, threading.Event())
    finally:
        committer.close()
    assert _count(conn, "SELECT count(*) FROM readings") == 3
    assert (stats.stored, stats.duplicates, stats.packs_replayed) == (3, 0, 1)
    assert first.done == {("gw-a", "s1"): [7]}
    assert again.done == {("gw-a", "s1"): [7]}, "a replayed pack is receipted again"
    assert _count(conn, "SELECT count(*) FROM pack_ledger") == 1


def test_the_same_reading_in_two_packs_is_stored_once(make_city: MakeCity) -> None:
    url, conn = make_city(["gw-a"], {"fdr-0": "gw-a"})
    now = float(int(time.time()))
    record = Record(name="fdr-0/voltage", time=now - 5, unit="V", value=230.0)
    other = Record(name="fdr-0/voltage", time=now - 4, unit="V", value=231.0)
    stats = Stats()
    committer = _committer(url, stats)
    try:
        committer.store(
            _batch(conn, [_message("gw-a", [record], PackId("s1", 1, 1))]), threading.Event()
        )
        # A device resending under a new number: the key refuses the copy, the new one goes in.
        batch = _batch(conn, [_message("gw-a", [record, other], PackId("s1", 2, 1))])
        committer.store(batch, threading.Event())
    finally:
        committer.close()
    assert _count(conn, "SELECT count(*) FROM readings") == 2
    assert (stats.stored, stats.duplicates, stats.quarantined) == (2, 1, 0)
    assert batch.done == {("gw-a", "s1"): [2]}
