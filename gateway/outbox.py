"""The gateway's on-disk outbox: encoded SenML packs waiting for the platform's receipt.

Every pack is written here before it is published and deleted only once the platform's receipt
says it is stored (``ARCHITECTURE.md``, "The wire contract"; or, talking to a platform without
receipts, once the broker acknowledged it), so a broker crash, a network cut or a gateway
restart loses nothing. The file also keeps a random stream id, made with it, that names its
numbering on the wire (``gateway.receipts``). Packs carry a sequence number that only ever
grows (SQLite ``AUTOINCREMENT``: a number is never given twice, even after the newest row was
deleted), and :meth:`Outbox.peek` returns them in that order, the order they are published in.

Durability, chosen per kind of write (SQLite in WAL mode):

- :meth:`~Outbox.put` commits with ``synchronous=FULL``: the WAL is fsynced before ``put``
  returns, so an accepted pack survives a process kill *and* a power cut. It costs one fsync per
  pack (about 0.4 ms here, 2,400 puts/s); a pack holds many readings, so a gateway puts a few per
  second at most.
- :meth:`~Outbox.delete` commits with ``synchronous=NORMAL``: it survives a process kill (the WAL
  is in the page cache, which the kernel writes out), but a power cut may undo the last deletes.
  Undoing a delete only means that pack is published again, which the ingestion service absorbs
  (readings are idempotent on (sensor, quantity, time)); an fsync per PUBACK would buy nothing.

The outbox is bounded (:class:`Cap`): when a new pack would pass the number of packs or of payload
bytes, it either drops the oldest packs or refuses the new one, as configured. Every drop and
refusal is logged as a WARNING and counted (:meth:`Outbox.stats`).

One process owns an outbox file at a time (an advisory ``flock`` on ``<path>.lock``, released by
the kernel when the process dies): two publishers draining one outbox would double every pack.
Within the process, every method may be called from any thread; paho's network thread calls
:meth:`~Outbox.delete` on PUBACK while drivers call :meth:`~Outbox.put`.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.errors import GatewayError

__all__ = [
    "Cap",
    "CapPolicy",
    "Entry",
    "Outbox",
    "OutboxClosedError",
    "OutboxError",
    "OutboxFullError",
    "OutboxLockedError",
    "OutboxStats",
]

logger = logging.getLogger(__name__)

# 2 adds ``meta`` (the stream id); a version 1 file is upgraded in place when opened.
_SCHEMA_VERSION = 2
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
)
""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class OutboxError(GatewayError):
    """Base of the outbox's errors."""


class OutboxLockedError(OutboxError):
    """Another process holds the outbox file."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"outbox {path} is in use by another process")
        self.path = path


class OutboxClosedError(OutboxError):
    """The outbox was used after :meth:`Outbox.close`."""


class OutboxFullError(OutboxError):
    """A pack was refused by the cap (policy ``refuse_newest``, or larger than ``max_bytes``)."""

    def __init__(self, topic: str, size: int, depth: int, total_bytes: int, reason: str) -> None:
        super().__init__(
            f"outbox full, pack of {size} bytes for {topic} refused: {reason} "
            f"(holding {depth} packs, {total_bytes} bytes)"
        )
        self.topic = topic
        self.size = size
        self.depth = depth
        self.total_bytes = total_bytes
        self.reason = reason


class CapPolicy(enum.StrEnum):
    """What the outbox does when a new pack would pass its cap."""

    DROP_OLDEST = "drop_oldest"
    """Make room by deleting the oldest packs: after a long outage the present is kept."""
    REFUSE_NEWEST = "refuse_newest"
    """Keep what is there and raise :class:`OutboxFullError` for the new pack."""


@dataclass(frozen=True, slots=True)
class Cap:
    """The outbox's bound; ``None`` leaves a dimension unbounded.

    Defaults: 64 MiB of payload holds about 36 hours of a 100-sensor gateway reporting one
    300-byte pack per sensor per minute, and fits the flash of a small field device; the pack
    count bounds the table when packs are tiny. ``drop_oldest`` by default because dashboards
    and alerts need the present: after an outage that outlasts the cap, the newest readings
    matter more than the oldest, and the drop is logged and counted, never silent.
    """

    max_packs: int | None = 200_000
    max_bytes: int | None = 64 * 1024 * 1024
    policy: CapPolicy = CapPolicy.DROP_OLDEST

    def __post_init__(self) -> None:
        for name in ("max_packs", "max_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")


@dataclass(frozen=True, slots=True)
class Entry:
    """A pack in the outbox. ``created_at`` is wall-clock seconds since the Unix epoch."""

    seq: int
    topic: str
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot of the outbox. Counters count since this process opened the outbox."""

    depth: int
    bytes: int
    last_seq: int
    put: int
    deleted: int
    dropped: int
    dropped_bytes: int
    refused: int


class Outbox:
    """A bounded, durable FIFO of packs in one SQLite file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], cap: Cap | None = None) -> None:
        self.path = Path(path)
        self.cap = cap or Cap()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._lock_file = self._take_file_lock()
        connections: list[sqlite3.Connection] = []
        try:
            # Two connections, each with its own fsync policy (module docstring); every use is
            # under self._lock, so they never wait on each other's SQLite locks.
            for synchronous in ("FULL", "NORMAL"):
                connections.append(self._connect(synchronous))
            self._puts, self._acks = connections
            depth, total, last = self._acks.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0),"
                " (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'outbox')"
                " FROM outbox"
            ).fetchone()
        except BaseException:
            for conn in connections:
                conn.close()
            os.close(self._lock_file)
            raise
        self._depth: int = depth
        self._bytes: int = total
        self._last_seq: int = last
        self.stream: str = self._acks.execute(
            "SELECT value FROM meta WHERE key = 'stream'"
        ).fetchone()[0]
        self._put = self._deleted = self._dropped = self._dropped_bytes = self._refused = 0

    def _take_file_lock(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxLockedError(self.path) from None
        return fd

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), so a drop
        # and the insert that needed it commit together or not at all.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, _SCHEMA_VERSION):
            conn.close()
            raise OutboxError(f"outbox {self.path} has schema {version}, not {_SCHEMA_VERSION}")
        for statement in _SCHEMA:
            conn.execute(statement)
        # The stream id names this file's numbering (gateway.receipts): made once, kept for the
        # file's life; a new file is a new stream, so its seq 1 is not taken for the old one's.
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('stream', ?)", (uuid.uuid4().hex,)
        )
        conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        return conn

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and release the file lock; further calls raise OutboxClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._puts.close()
            self._acks.close()
            os.close(self._lock_file)
            self._changed.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxClosedError(f"outbox {self.path} is closed")

    def put(self, topic: str, payload: bytes) -> int:
        """Store a pack durably and return its sequence number.

        Raises :class:`OutboxFullError` when the cap refuses it (policy ``refuse_newest``, or a pack
        larger than ``max_bytes`` under either policy: no amount of dropping makes room for it).
        """
        size = len(payload)
        with self._lock:
            self._check_open()
            cap = self.cap
            if cap.max_bytes is not None and size > cap.max_bytes:
                self._refuse(topic, size, f"the pack alone is larger than {cap.max_bytes} bytes")
            packs_over = 0 if cap.max_packs is None else self._depth + 1 - cap.max_packs
            bytes_over = 0 if cap.max_bytes is None else self._bytes + size - cap.max_bytes
            if (packs_over > 0 or bytes_over > 0) and cap.policy is CapPolicy.REFUSE_NEWEST:
                self._refuse(topic, size, f"cap {cap.max_packs} packs / {cap.max_bytes} bytes")
            conn = self._puts
            conn.execute("BEGIN IMMEDIATE")
            try:
                victims = self._victims(packs_over, bytes_over)
                if victims:
                    conn.execute("DELETE FROM outbox WHERE seq <= ?", (victims[-1][0],))
                cursor = conn.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES (?, ?, ?)",
                    (topic, payload, time.time()),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            seq = cursor.lastrowid
            assert seq is not None  # an INSERT always sets it
            dropped_bytes = sum(length for _, length in victims)
            self._depth += 1 - len(victims)
            self._bytes += size - dropped_bytes
            self._last_seq = seq
            self._put += 1
            if victims:
                self._dropped += len(victims)
                self._dropped_bytes += dropped_bytes
                self._changed.notify_all()
                logger.warning(
                    "outbox %s over its cap (%s packs / %s bytes): dropped the %d oldest packs "
                    "(seq %d..%d, %d bytes) to keep pack %d; %d dropped since start",
                    self.path,
                    cap.max_packs,
                    cap.max_bytes,
                    len(victims),
                    victims[0][0],
                    victims[-1][0],
                    dropped_bytes,
                    seq,
                    self._dropped,
                )
            return seq

    def _victims(self, packs_over: int, bytes_over: int) -> list[tuple[int, int]]:
        """The oldest ``(seq, size)`` rows whose removal brings both counts under the cap."""
        victims: list[tuple[int, int]] = []
        if packs_over <= 0 and bytes_over <= 0:
            return victims
        freed = 0
        # The cursor steps lazily, so only the rows needed are read.
        for seq, length in self._puts.execute(
            "SELECT seq, length(payload) FROM outbox ORDER BY seq"
        ):
            victims.append((seq, length))
            freed += length
            if len(victims) >= packs_over and freed >= bytes_over:
                break
        return victims

    def _refuse(self, topic: str, size: int, reason: str) -> None:
        self._refused += 1
        logger.warning(
            "outbox %s refused a pack of %d bytes for %s: %s; %d refused since start",
            self.path,
            size,
            topic,
            reason,
            self._refused,
        )
        raise OutboxFullError(topic, size, self._depth, self._bytes, reason)

    def peek(self, limit: int, after: int = 0) -> list[Entry]:
        """Return up to ``limit`` packs with ``seq > after``, oldest first; nothing is removed."""
        with self._lock:
            self._check_open()
            rows = self._acks.execute(
                "SELECT seq, topic, payload, created_at FROM outbox WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Entry(seq, topic, bytes(payload), created) for seq, topic, payload, created in rows]

    def delete(self, seq: int) -> bool:
        """Delete pack ``seq`` (acknowledged by the broker); False if it was not there.

        A pack can be gone already: the cap may have dropped it while it was in flight.
        """
        return self.delete_range(seq, seq) > 0

    def get(self, seq: int) -> Entry | None:
        """Pack ``seq``, or None when it is gone (receipted, acknowledged or dropped)."""
        with self._lock:
            self._check_open()
            row = self._acks.execute(
                "SELECT seq, topic, payload, created_at FROM outbox WHERE seq = ?", (seq,)
            ).fetchone()
        return None if row is None else Entry(row[0], row[1], bytes(row[2]), row[3])

    def first_seq(self) -> int:
        """The lowest sequence still waiting; ``last_seq() + 1`` when the outbox is empty."""
        with self._lock:
            self._check_open()
            row = self._acks.execute("SELECT min(seq) FROM outbox").fetchone()
            return self._last_seq + 1 if row[0] is None else int(row[0])

    def delete_range(self, lo: int, hi: int) -> int:
        """Delete the packs ``lo..hi`` (inclusive: a receipt's range); return how many were
        there. Packs already gone are skipped: a receipt may come twice."""
        with self._lock:
            self._check_open()
            # Two statements rather than DELETE ... RETURNING (SQLite 3.35+), which older field
            # devices lack; self._lock and the file lock keep any other writer out in between.
            count, size = self._acks.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox"
                " WHERE seq BETWEEN ? AND ?",
                (lo, hi),
            ).fetchone()
            if count:
                self._acks.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi))
                self._depth -= count
                self._bytes -= size
                self._deleted += count
                self._changed.notify_all()
            return int(count)

    def depth(self) -> int:
        """The number of packs waiting."""
        with self._lock:
            return self._depth

    def bytes(self) -> int:
        """The payload bytes waiting (topics and SQLite's own overhead not counted)."""
        with self._lock:
            return self._bytes

    def last_seq(self) -> int:
        """The highest sequence number ever given by this file (0 before the first put)."""
        with self._lock:
            return self._last_seq

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(
                depth=self._depth,
                bytes=self._bytes,
                last_seq=self._last_seq,
                put=self._put,
                deleted=self._deleted,
                dropped=self._dropped,
                dropped_bytes=self._dropped_bytes,
                refused=self._refused,
            )

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Block until the outbox holds no pack (or it is closed); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._depth == 0 or self._closed, timeout)
