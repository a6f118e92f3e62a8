"""The quarantine's tables through their one owner: store, list and count under one filter,
page with previews, claim for a replay, mark replayed, remove. Against a real database, in each
storage mode.

The messages stored here are plain dataclasses of this file: the owner reads a message by its
attributes (``NewMessage``), not by ingestion's types, which it may not import.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import pytest

from services.storage import quarantine
from services.storage.quarantine import QuarantineFilter
from services.storage.urls import libpq_url

Conn = psycopg.Connection[tuple[object, ...]]
NOW = time.time()


@dataclass(frozen=True)
class Row:
    gateway_id: str | None
    sensor_id: str | None
    index: int | None
    reason: str
    detail: str = ""


@dataclass
class Message:
    received_at: float
    topic: str
    payload: bytes
    entries: list[Row] = field(default_factory=list)
    size: int | None = None


def _message(age_s: float, gateway: str, *rows: Row, payload: bytes = b"[]") -> Message:
    return Message(NOW - age_s, f"ssc/v1/{gateway}/up", payload, list(rows))


@pytest.fixture
def stored(db: Conn) -> list[int]:
    """Three messages: gw-a's with two records (unknown sensor s1, out of bounds s2), gw-b's
    whole message (not SenML), gw-a's later record of s1; and one with no entry (not stored)."""
    ids = quarantine.store_ids(
        db,
        [
            _message(
                300,
                "gw-a",
                Row("gw-a", "s1", 0, "unknown_sensor"),
                Row("gw-a", "s2", 1, "out_of_bounds"),
                payload=b'[{"n":"s1","v":1},{"n":"s2","v":1e9}]',
            ),
            _message(200, "gw-b", Row("gw-b", None, None, "not_senml"), payload=b"\xff" * 40),
            _message(100, "gw-a"),  # nothing refused: not stored
            _message(60, "gw-a", Row("gw-a", "s1", 0, "unknown_sensor")),
        ],
    )
    db.commit()
    return ids


def _ids(entries: list[quarantine.Entry]) -> list[int]:
    return [e.id for e in entries]


def test_store_keeps_each_message_once_and_skips_those_with_no_entry(
    db: Conn, stored: list[int]
) -> None:
    assert len(stored) == 3
    assert db.execute("SELECT count(*) FROM quarantine_messages").fetchone() == (3,)
    assert db.execute("SELECT count(*) FROM quarantine").fetchone() == (4,)
    assert quarantine.store(db, [_message(10, "gw-c")]) == 0
    assert quarantine.store(db, [_message(10, "gw-c", Row("gw-c", "s9", 0, "unknown_sensor"))]) == 1
    # A message whose payload keeps only its start is counted at its full size.
    cut = _message(5, "gw-c", Row("gw-c", None, None, "pack_too_large"), payload=b"x" * 8)
    cut.size = 5000
    quarantine.store(db, [cut])
    [entry] = quarantine.list_entries(db, QuarantineFilter(reason="pack_too_large"))
    assert (entry.payload, entry.size) == (b"x" * 8, 5000)


def test_remove_takes_a_message_with_its_entries(db: Conn, stored: list[int]) -> None:
    quarantine.remove(db, stored[:1])
    quarantine.remove(db, [])
    assert quarantine.summary(db) == {"not_senml": 1, "unknown_sensor": 1}


def test_the_list_and_the_summary_count_what_one_filter_chooses(
    db: Conn, stored: list[int]
) -> None:
    for which in (
        QuarantineFilter(),
        QuarantineFilter(reason="unknown_sensor"),
        QuarantineFilter(gateway="gw-a"),
        QuarantineFilter(sensor="s2"),
        QuarantineFilter(since=datetime.fromtimestamp(NOW - 250, UTC)),
        QuarantineFilter(until=datetime.fromtimestamp(NOW - 250, UTC)),
        QuarantineFilter(gateway="gw-a", sensor="s1"),
    ):
        listed = quarantine.list_entries(db, which, limit=100)
        counted: dict[str, int] = {}
        for entry in listed:
            counted[entry.reason] = counted.get(entry.reason, 0) + 1
        assert quarantine.summary(db, which) == counted, which
    assert quarantine.summary(db, QuarantineFilter(gateway="gw-a")) == {
        "unknown_sensor": 2,
        "out_of_bounds": 1,
    }
    assert quarantine.summary(db, QuarantineFilter(sensor="nobody")) == {}


def test_a_replayed_entry_is_hidden_unless_asked_for(db: Conn, stored: list[int]) -> None:
    [first, *_] = quarantine.list_entries(db, QuarantineFilter(sensor="s1"))
    quarantine.mark_replayed(db, [first.id])
    quarantine.mark_replayed(db, [])
    db.commit()
    waiting = QuarantineFilter(sensor="s1")
    everything = QuarantineFilter(sensor="s1", include_replayed=True)
    assert first.id not in _ids(quarantine.list_entries(db, waiting))
    assert quarantine.summary(db, waiting) == {"unknown_sensor": 1}
    shown = quarantine.list_entries(db, everything)
    assert first.id in _ids(shown)
    assert quarantine.summary(db, everything) == {"unknown_sensor": 2}
    replayed = quarantine.get(db, first.id)
    assert replayed is not None
    assert replayed.replayed_at is not None


def test_pages_newest_first_with_a_preview_of_each_payload(db: Conn, stored: list[int]) -> None:
    everything = _ids(quarantine.list_entries(db, limit=100))
    assert everything == sorted(everything, reverse=True)
    assert _ids(quarantine.list_entries(db, limit=2)) == everything[:2]
    assert _ids(quarantine.list_entries(db, before=everything[1])) == everything[2:]
    [whole] = quarantine.list_entries(db, QuarantineFilter(reason="not_senml"), preview=16)
    assert (whole.payload, whole.size) == (b"\xff" * 16, 40)
    assert (
        quarantine.get(db, whole.id)
        == quarantine.list_entries(db, QuarantineFilter(ids=(whole.id,)))[0]
    )


def test_a_claim_takes_record_entries_and_their_payloads_once_and_skips_what_another_holds(
    db: Conn, stored: list[int], database_url: str
) -> None:
    claimed = quarantine.claim_records(db, QuarantineFilter())
    assert [e.sensor_id for e in claimed.entries] == ["s1", "s2", "s1"]
    assert {e.payload for e in claimed.entries} == {b""}
    assert set(claimed.payloads) == {stored[0], stored[2]}
    assert claimed.payloads[stored[0]] == b'[{"n":"s1","v":1},{"n":"s2","v":1e9}]'
    assert claimed.whole_messages == 1
    with psycopg.connect(libpq_url(database_url)) as other:
        # A concurrent replay of the same entries finds them taken and leaves them be.
        assert quarantine.claim_records(other, QuarantineFilter()).entries == []
        db.rollback()
        again = quarantine.claim_records(other, QuarantineFilter(sensor="s2"))
        assert [e.sensor_id for e in again.entries] == ["s2"]
        other.rollback()
