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


def test_message_by_message_resumes_after_an_outage_and_keeps_the_registry_updates(
    make_city: MakeCity,
) -> None:
    url, conn = make_city(["gw-a"], {"fdr-0": "gw-a", "fdr-1": "gw-a", "fdr-2": "gw-a"})
    # A rule validation knows nothing of: PostgreSQL refuses value 123, so the batch is written
    # message by message. Once that has quarantined the refused message (committed), the row
    # valued 241 ends the committer's connection, once (a sequence is not rolled back).
    conn.execute(
        """
        ALTER TABLE readings ADD CONSTRAINT no_123 CHECK (value <> 123.0);
        CREATE SEQUENCE outage_once;
        CREATE FUNCTION outage() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.value = 241.0
               AND EXISTS (SELECT 1 FROM quarantine WHERE reason = 'storage_error')
               AND nextval('outage_once') = 1 THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER outage BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION outage();
        """
    )
    conn.commit()
    now = float(int(time.time()))

    def voltage(sensor: str, value: float) -> Record:
        return Record(name=f"{sensor}/voltage", time=now - 5, unit="V", value=value)

    ghost = Record(name="ghost/voltage", time=now - 5, unit="V", value=230.0)  # quarantined
    status = Message(1, 9, 1, topics.status_topic("gw-a"), b"online", time.time(), False, None)
    messages = [
        _message("gw-a", [voltage("fdr-0", 230.0), ghost], PackId("s1", 1, 1), mid=1),
        status,
        _message("gw-a", [voltage("fdr-1", 123.0)], PackId("s1", 2, 1), mid=2),
        _message("gw-a", [voltage("fdr-2", 241.0)], PackId("s1", 3, 1), mid=3),
    ]
    stats = Stats()
    committer = _committer(url, stats)
    try:
        batch = _batch(conn, messages)
        committer.store(batch, threading.Event())
    finally:
        committer.close()

    # The trigger's two calls (the outage, then the write after it), and this one.
    assert _count(conn, "SELECT nextval('outage_once')") == 3, "the outage happened"
    assert _count(conn, "SELECT count(*) FROM readings") == 2  # fdr-0 and fdr-2
    # Each quarantine entry once: the unknown sensor's, and the refused message's.
    reasons = conn.execute("SELECT reason FROM quarantine ORDER BY reason").fetchall()
    assert reasons == [("storage_error",), ("unknown_sensor",)]
    assert batch.done == {("gw-a", "s1"): [1, 2, 3]}, "each pack receipted once"
    assert stats.messages == len(messages)
    # The batch's gateway status survived the refusal of one of its messages.
    online = conn.execute("SELECT online, last_seen IS NOT NULL FROM gateways WHERE id = 'gw-a'")
    assert online.fetchone() == (True, True)
