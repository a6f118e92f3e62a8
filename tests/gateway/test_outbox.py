"""The outbox on its own (SQLite only, no broker): order, delete, durability, cap, threads."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gateway.outbox import (
    Cap,
    CapPolicy,
    Outbox,
    OutboxClosedError,
    OutboxFullError,
    OutboxLockedError,
)

TOPIC = "ssc/v1/gw-test/up"
UNBOUNDED = Cap(max_packs=None, max_bytes=None)


def payloads(count: int, size: int = 10) -> list[bytes]:
    return [f"{i:0{size}d}".encode() for i in range(count)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


def test_peek_returns_packs_in_put_order_with_growing_seq(path: Path) -> None:
    with Outbox(path) as outbox:
        seqs = [outbox.put(TOPIC, p) for p in payloads(20)]
        entries = outbox.peek(100)
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 20
        assert [e.seq for e in entries] == seqs
        assert [e.payload for e in entries] == payloads(20)
        assert {e.topic for e in entries} == {TOPIC}
        assert outbox.peek(5) == entries[:5]
        assert outbox.peek(5, after=seqs[9]) == entries[10:15]
        assert outbox.peek(5, after=seqs[-1]) == []


def test_delete_removes_one_pack_and_updates_depth_and_bytes(path: Path) -> None:
    with Outbox(path) as outbox:
        seqs = [outbox.put(TOPIC, p) for p in payloads(3, size=100)]
        assert (outbox.depth(), outbox.bytes()) == (3, 300)
        assert outbox.delete(seqs[1]) is True
        assert outbox.delete(seqs[1]) is False  # already gone: a PUBACK after a cap drop
        assert [e.seq for e in outbox.peek(10)] == [seqs[0], seqs[2]]
        assert (outbox.depth(), outbox.bytes()) == (2, 200)
        assert outbox.stats().deleted == 1


def test_packs_counts_and_sequence_survive_reopen(path: Path) -> None:
    with Outbox(path) as outbox:
        seqs = [outbox.put(TOPIC, p) for p in payloads(5)]
        outbox.delete(seqs[0])
    with Outbox(path) as outbox:
        assert [e.payload for e in outbox.peek(10)] == payloads(5)[1:]
        assert (outbox.depth(), outbox.bytes(), outbox.last_seq()) == (4, 40, seqs[-1])
        for entry in outbox.peek(10):
            outbox.delete(entry.seq)
    with Outbox(path) as outbox:
        # Emptied, reopened: a seq is still never given twice (AUTOINCREMENT), so a late PUBACK
        # for an old seq can never delete a new pack.
        assert outbox.depth() == 0
        assert outbox.put(TOPIC, b"x") == seqs[-1] + 1


def test_pack_survives_the_process_being_killed_right_after_put(path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from gateway.outbox import Outbox
        outbox = Outbox({str(path)!r})
        outbox.put("t", b"survivor")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=30)
    assert result.returncode == -9
    with Outbox(path) as outbox:
        assert [e.payload for e in outbox.peek(10)] == [b"survivor"]


def test_uses_wal_and_fsyncs_puts(path: Path) -> None:
    with Outbox(path) as outbox:
        outbox.put(TOPIC, b"x")
        assert outbox._puts.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert outbox._puts.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert outbox._acks.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_second_owner_is_refused_until_the_first_closes(path: Path) -> None:
    outbox = Outbox(path)
    with pytest.raises(OutboxLockedError):
        Outbox(path)
    outbox.close()
    with pytest.raises(OutboxClosedError):
        outbox.put(TOPIC, b"x")
    Outbox(path).close()


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "gateway.outbox" and r.levelno == logging.WARNING
    ]


def test_drop_oldest_by_pack_count_keeps_the_newest_and_says_so(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.outbox")
    with Outbox(path, Cap(max_packs=5, max_bytes=None)) as outbox:
        seqs = [outbox.put(TOPIC, p) for p in payloads(8)]
        assert [e.seq for e in outbox.peek(10)] == seqs[3:]
        stats = outbox.stats()
        assert (stats.depth, stats.put, stats.dropped, stats.dropped_bytes) == (5, 8, 3, 30)
        assert stats.refused == 0
    logged = warnings_from(caplog)
    assert len(logged) == 3
    assert f"seq {seqs[0]}..{seqs[0]}" in logged[0].getMessage()


def test_drop_oldest_by_bytes_drops_as_many_as_needed_in_one_put(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.outbox")
    with Outbox(path, Cap(max_packs=None, max_bytes=100)) as outbox:
        small = [outbox.put(TOPIC, b"s" * 10) for _ in range(10)]  # exactly at the cap
        big = outbox.put(TOPIC, b"B" * 35)  # needs 35 bytes: the 4 oldest go
        assert [e.seq for e in outbox.peek(20)] == [*small[4:], big]
        assert (outbox.depth(), outbox.bytes()) == (7, 95)
        assert (outbox.stats().dropped, outbox.stats().dropped_bytes) == (4, 40)
    (logged,) = warnings_from(caplog)
    assert "dropped the 4 oldest packs" in logged.getMessage()


def test_refuse_newest_keeps_what_is_there_and_raises(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.outbox")
    cap = Cap(max_packs=3, max_bytes=1000, policy=CapPolicy.REFUSE_NEWEST)
    with Outbox(path, cap) as outbox:
        seqs = [outbox.put(TOPIC, p) for p in payloads(3)]
        with pytest.raises(OutboxFullError) as refused:
            outbox.put(TOPIC, b"one too many")
        assert (refused.value.topic, refused.value.size, refused.value.depth) == (TOPIC, 12, 3)
        assert [e.seq for e in outbox.peek(10)] == seqs
        outbox.delete(seqs[0])
        accepted = outbox.put(TOPIC, b"room again")
        assert accepted > seqs[-1]
        stats = outbox.stats()
        assert (stats.put, stats.refused, stats.dropped, stats.depth) == (4, 1, 0, 3)
    assert len(warnings_from(caplog)) == 1


@pytest.mark.parametrize("policy", list(CapPolicy))
def test_a_pack_larger_than_the_byte_cap_is_refused_under_either_policy(
    path: Path, policy: CapPolicy
) -> None:
    with Outbox(path, Cap(max_packs=None, max_bytes=50, policy=policy)) as outbox:
        kept = outbox.put(TOPIC, b"k" * 50)
        with pytest.raises(OutboxFullError, match="larger than 50 bytes"):
            outbox.put(TOPIC, b"x" * 51)
        assert [e.seq for e in outbox.peek(10)] == [kept]  # nothing dropped for a hopeless pack
        assert (outbox.stats().refused, outbox.stats().dropped) == (1, 0)


def test_cap_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="max_packs"):
        Cap(max_packs=0)


def test_concurrent_puts_and_deletes_lose_and_double_nothing(path: Path) -> None:
    writers, per_writer = 4, 150
    stop_deleting = threading.Event()
    deleted: list[int] = []
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for i in range(per_writer):
                outbox.put(TOPIC, f"{index}:{i}".encode())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def delete() -> None:
        try:
            while not (stop_deleting.is_set() and outbox.depth() == 0):
                for entry in outbox.peek(7):
                    if outbox.delete(entry.seq):
                        deleted.append(entry.seq)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with Outbox(path, UNBOUNDED) as outbox:
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        deleter = threading.Thread(target=delete)
        deleter.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stop_deleting.set()
        deleter.join(30)
        assert not errors
        stats = outbox.stats()
        total = writers * per_writer
        assert (stats.put, stats.deleted, stats.depth, stats.bytes) == (total, total, 0, 0)
        assert sorted(deleted) == list(range(1, total + 1))  # each seq once, none skipped
    # The counters kept in memory agree with the file.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_wait_empty_wakes_on_the_last_delete(path: Path) -> None:
    with Outbox(path) as outbox:
        seq = outbox.put(TOPIC, b"x")
        assert outbox.wait_empty(timeout=0.01) is False
        threading.Timer(0.05, outbox.delete, args=(seq,)).start()
        assert outbox.wait_empty(timeout=5) is True
