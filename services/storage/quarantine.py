"""The quarantine's tables (``quarantine``, ``quarantine_messages``): every statement that reads
or writes them, here and nowhere else. The worker and a history import store entries, the
maintenance loop prunes them, a replay claims and marks them, and the API and the CLI read them,
all through these functions (issue 12: one owner per table).

An entry is one row of ``quarantine`` with its message's bytes. Readers choose entries with one
:class:`QuarantineFilter`, under the one rule they all share: an entry counts until it is
replayed, unless ``include_replayed``.

What is pure about the quarantine (which entries a message makes, how many at most, what a
replay decides) lives in ``services.ingest.quarantine``; this module knows only the rows, so it
describes a message to store by the attributes it reads (:class:`NewMessage`) and imports
nothing from ingestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.rows import class_row

Conn = psycopg.Connection[tuple[object, ...]]


def _columns(payload: str) -> sql.Composed:
    return sql.SQL(
        "q.id, q.received_at, q.topic, q.gateway_id, q.sensor_id, q.record_index, q.reason, "
        "q.detail, {} AS payload, m.bytes AS size, q.replayed_at, q.message_id"
    ).format(sql.SQL(payload))


_COLUMNS = _columns("m.payload")
# A replay reads a message's payload once for all its entries (see :func:`claim_records`).
_COLUMNS_NO_PAYLOAD = _columns("''::bytea")
_FROM = sql.SQL("quarantine q JOIN quarantine_messages m ON m.id = q.message_id")


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the quarantine table."""

    id: int
    received_at: datetime
    topic: str
    gateway_id: str | None
    sensor_id: str | None
    record_index: int | None  # in the pack as it arrived; None: the whole message
    reason: str
    detail: str
    payload: bytes  # the raw message, as it arrived (shared by the entries of one message)
    size: int  # of the message as it arrived: ``payload`` may keep only its start
    replayed_at: datetime | None
    message_id: int


@dataclass(frozen=True, slots=True)
class QuarantineFilter:
    """Which entries a reader means: those matching every field given, not yet replayed unless
    ``include_replayed``. ``since`` is inclusive and ``until`` exclusive, both on the time the
    message was received. One value for the list and the summary alike, so the two count the
    same entries (the CLI's ``quarantine list`` prints both, the API serves both)."""

    reason: str | None = None
    gateway: str | None = None
    sensor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[int, ...] | None = None
    include_replayed: bool = False

    def where(self) -> tuple[sql.Composable, list[Any]]:
        """The SQL condition on ``quarantine q`` and its parameters."""
        # Only these fixed fragments become SQL text; every value is a bind parameter.
        clauses: list[sql.Composable] = [sql.SQL("TRUE")]
        params: list[Any] = []
        for fragment, value in (
            # str(): a Reason member is sent as its code, whatever adapter psycopg picks for enums.
            ("q.reason = %s", None if self.reason is None else str(self.reason)),
            ("q.gateway_id = %s", self.gateway),
            ("q.sensor_id = %s", self.sensor),
            ("q.received_at >= %s", self.since),
            ("q.received_at < %s", self.until),
            ("q.id = ANY(%s)", None if self.ids is None else list(self.ids)),
        ):
            if value is not None:
                clauses.append(sql.SQL(fragment))
                params.append(value)
        if not self.include_replayed:
            clauses.append(sql.SQL("q.replayed_at IS NULL"))
        return sql.SQL(" AND ").join(clauses), params


WAITING = QuarantineFilter()
"""Every entry still waiting for an operator."""


def list_entries(
    conn: Conn,
    which: QuarantineFilter = WAITING,
    *,
    limit: int = 50,
    before: int | None = None,
    preview: int | None = None,
) -> list[Entry]:
    """The newest ``limit`` entries ``which`` chooses, newest (highest id) first.

    ``before``: only entries with a smaller id (a page's cursor). ``preview``: each payload's
    first ``preview`` bytes only (``size`` still says the whole length); None: all of it.
    """
    where, params = which.where()
    if before is not None:
        where = sql.SQL("{} AND q.id < %s").format(where)
        params = [*params, before]
    columns = _COLUMNS if preview is None else _columns("substring(m.payload FROM 1 FOR %s)")
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY q.id DESC LIMIT %s").format(
        columns, _FROM, where
    )
    head = [] if preview is None else [preview]
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, [*head, *params, limit]).fetchall()


def summary(conn: Conn, which: QuarantineFilter = WAITING) -> dict[str, int]:
    """How many entries ``which`` chooses, by reason, the most frequent first (no limit).

    The one rule, for the CLI (``quarantine list``) and the API (``/v1/quarantine`` and
    ``/v1/quarantine/summary``) alike: an entry counts while it waits for an operator, that is
    until it is replayed; ``include_replayed`` counts the replayed ones too. (The two once
    counted apart, and the API's count went on including what a replay had already stored.)
    """
    where, params = which.where()
    query = sql.SQL(
        "SELECT reason, count(*) FROM quarantine q WHERE {} GROUP BY reason ORDER BY 2 DESC, 1"
    ).format(where)
    rows = conn.execute(query, params).fetchall()
    return {str(reason_): int(count) for reason_, count in rows}  # type: ignore[call-overload]


def get(conn: Conn, entry_id: int) -> Entry | None:
    """The entry with this id, replayed or not; None when there is none."""
    query = sql.SQL("SELECT {} FROM {} WHERE q.id = %s").format(_COLUMNS, _FROM)
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, [entry_id]).fetchone()


# --- writes -----------------------------------------------------------------------------------


class NewEntry(Protocol):
    """An entry to store, as this module reads it (``services.ingest.quarantine.Rejected``)."""

    @property
    def gateway_id(self) -> str | None: ...
    @property
    def sensor_id(self) -> str | None: ...
    @property
    def index(self) -> int | None: ...  # the record's; None: the whole message
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...


class NewMessage(Protocol):
    """A message to store with its entries (``services.ingest.quarantine.Quarantined``)."""

    @property
    def received_at(self) -> float: ...  # Unix seconds
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def entries(self) -> Sequence[NewEntry]: ...
    @property
    def size(self) -> int | None: ...  # of the message, when ``payload`` keeps only its start


def store(conn: Conn, messages: Sequence[NewMessage]) -> int:
    """Insert each message once and its entries, in the caller's transaction; return the
    number of entries."""
    stored = [m for m in messages if m.entries]
    store_ids(conn, stored)
    return sum(len(m.entries) for m in stored)


def store_ids(conn: Conn, messages: Sequence[NewMessage]) -> list[int]:
    """:func:`store`, returning the id of each message stored (those with entries), in order.
    Two round trips for the whole batch, whatever its size: the ids are taken from the sequence
    first so that entries can name their message without one insert each."""
    messages = [m for m in messages if m.entries]
    if not messages:
        return []
    with conn.cursor() as cur:
        ids = [
            int(row[0])  # type: ignore[call-overload]
            for row in cur.execute(
                "SELECT nextval(pg_get_serial_sequence('quarantine_messages', 'id')) "
                "FROM generate_series(1, %s)",
                [len(messages)],
            ).fetchall()
        ]
        cur.executemany(
            "INSERT INTO quarantine_messages (id, received_at, topic, bytes, payload) "
            "VALUES (%s, to_timestamp(%s), %s, %s, %s)",
            [
                (i, m.received_at, m.topic, m.size or len(m.payload), m.payload)
                for i, m in zip(ids, messages, strict=True)
            ],
        )
        entries = [
            (i, m.received_at, m.topic, e.gateway_id, e.sensor_id, e.index, e.reason, e.detail)
            for i, m in zip(ids, messages, strict=True)
            for e in m.entries
        ]
        cur.executemany(
            "INSERT INTO quarantine (message_id, received_at, topic, gateway_id, sensor_id, "
            "record_index, reason, detail) VALUES (%s, to_timestamp(%s), %s, %s, %s, %s, %s, %s)",
            entries,
        )
    return ids


def remove(conn: Conn, message_ids: Sequence[int]) -> None:
    """Delete messages just stored (their entries go by cascade), in the caller's transaction."""
    if message_ids:
        conn.execute("DELETE FROM quarantine_messages WHERE id = ANY(%s)", (list(message_ids),))


def prune(conn: Conn, *, retention: timedelta, max_bytes: int) -> int:
    """Drop messages (and, by cascade, their entries) received before ``retention`` ago; then,
    while the payloads kept exceed ``max_bytes`` (0: no limit), the oldest messages, those whose
    entries were all replayed going first. In the caller's transaction; returns how many
    messages went."""
    with conn.cursor() as cur:
        # Every worker's maintenance loop prunes; one at a time, or two could each remove the
        # same excess and together twice as much.
        locked = cur.execute(
            "SELECT pg_try_advisory_xact_lock(hashtext('urbanpulse.quarantine.prune'))"
        ).fetchone()
        if not locked or not locked[0]:
            return 0
        cur.execute("DELETE FROM quarantine_messages WHERE received_at < now() - %s", [retention])
        gone = max(cur.rowcount, 0)
        if max_bytes <= 0:
            return gone
        total = cur.execute("SELECT coalesce(sum(bytes), 0) FROM quarantine_messages").fetchone()
        over = int(total[0]) - max_bytes if total else 0  # type: ignore[call-overload]
        if over <= 0:
            return gone
        # ``open``: some entry still waits for an operator; such messages go last.
        cur.execute(
            "WITH sized AS (SELECT id, bytes, EXISTS (SELECT 1 FROM quarantine q "
            "WHERE q.message_id = m.id AND q.replayed_at IS NULL) AS open "
            "FROM quarantine_messages m), "
            "ordered AS (SELECT id, bytes, "
            "sum(bytes) OVER (ORDER BY open, id ROWS UNBOUNDED PRECEDING) AS freed FROM sized) "
            "DELETE FROM quarantine_messages WHERE id IN "
            "(SELECT id FROM ordered WHERE freed - bytes < %s)",
            [over],
        )
        return gone + max(cur.rowcount, 0)


# --- replay -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a replay took in hand: the record entries (their ``payload`` empty), each message's
    payload once, and how many whole-message entries matched (nothing in them to replay)."""

    entries: list[Entry]
    payloads: dict[int, bytes]  # by message id
    whole_messages: int


def claim_records(conn: Conn, which: QuarantineFilter) -> Claimed:
    """Lock the record entries ``which`` chooses, oldest first, for the caller's transaction;
    entries another transaction holds (a replay running concurrently) are left to it."""
    where, params = which.where()
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM quarantine q WHERE {} AND record_index IS NULL").format(
            where
        ),
        params,
    ).fetchone()
    whole = int(row[0]) if row else 0  # type: ignore[call-overload]
    # SKIP LOCKED: a replay running concurrently owns its entries; this one leaves them be.
    # The payloads come apart, once a message: its entries share them.
    query = sql.SQL(
        "SELECT {} FROM {} WHERE {} AND q.record_index IS NOT NULL "
        "ORDER BY q.id FOR UPDATE OF q SKIP LOCKED"
    ).format(_COLUMNS_NO_PAYLOAD, _FROM, where)
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        entries = cur.execute(query, params).fetchall()
    payloads: dict[int, bytes] = {
        int(i): bytes(p)  # type: ignore[call-overload]
        for i, p in conn.execute(
            "SELECT id, payload FROM quarantine_messages WHERE id = ANY(%s)",
            [sorted({e.message_id for e in entries})],
        ).fetchall()
    }
    return Claimed(entries, payloads, whole)


def mark_replayed(conn: Conn, entry_ids: Sequence[int]) -> None:
    """Mark these entries replayed, in the caller's transaction (with the readings they gave)."""
    if entry_ids:
        conn.execute(
            "UPDATE quarantine SET replayed_at = now() WHERE id = ANY(%s)", [list(entry_ids)]
        )
