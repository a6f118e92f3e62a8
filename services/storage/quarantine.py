"""The quarantine's reads: its entries (one row of ``quarantine`` with its message's bytes),
listed, counted by reason, fetched by id, under the one filter rule every reader shares (an entry
counts until it is replayed, unless ``include_replayed``).

The ingestion side (``services.ingest.quarantine``) writes, prunes and replays entries; the API
and the CLI read them here, so the API needs nothing from ``services.ingest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

Conn = psycopg.Connection[tuple[object, ...]]

COLUMNS = sql.SQL(
    "q.id, q.received_at, q.topic, q.gateway_id, q.sensor_id, q.record_index, q.reason, "
    "q.detail, m.payload, q.replayed_at, q.message_id"
)
COLUMNS_NO_PAYLOAD = sql.SQL(
    "q.id, q.received_at, q.topic, q.gateway_id, q.sensor_id, q.record_index, q.reason, "
    "q.detail, ''::bytea AS payload, q.replayed_at, q.message_id"
)
FROM = sql.SQL("quarantine q JOIN quarantine_messages m ON m.id = q.message_id")


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
    replayed_at: datetime | None
    message_id: int


def filters(
    *,
    reason: str | None = None,
    gateway: str | None = None,
    sensor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: Sequence[int] | None = None,
    include_replayed: bool = False,
) -> tuple[sql.Composable, list[Any]]:
    # Only these fixed fragments become SQL text; every value is a bind parameter.
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    for fragment, value in (
        # str(): a Reason member is sent as its code, whatever adapter psycopg picks for enums.
        ("q.reason = %s", None if reason is None else str(reason)),
        ("q.gateway_id = %s", gateway),
        ("q.sensor_id = %s", sensor),
        ("q.received_at >= %s", since),
        ("q.received_at < %s", until),
        ("q.id = ANY(%s)", list(ids) if ids is not None else None),
    ):
        if value is not None:
            clauses.append(sql.SQL(fragment))
            params.append(value)
    if not include_replayed:
        clauses.append(sql.SQL("q.replayed_at IS NULL"))
    return sql.SQL(" AND ").join(clauses), params


def list_entries(
    conn: Conn,
    *,
    reason: str | None = None,
    gateway: str | None = None,
    sensor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    include_replayed: bool = False,
) -> list[Entry]:
    """The newest ``limit`` entries matching every filter given (not yet replayed, unless asked).

    ``since`` is inclusive and ``until`` exclusive, both on the time the message was received.
    """
    where, params = filters(
        reason=reason,
        gateway=gateway,
        sensor=sensor,
        since=since,
        until=until,
        include_replayed=include_replayed,
    )
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY q.id DESC LIMIT %s").format(
        COLUMNS, FROM, where
    )
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


def summary(
    conn: Conn,
    *,
    reason: str | None = None,
    gateway: str | None = None,
    sensor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_replayed: bool = False,
) -> dict[str, int]:
    """How many entries match the filters, by reason, the most frequent first (no limit).

    The one rule, for the CLI (``quarantine list``) and the API (``/v1/quarantine/summary``)
    alike: an entry counts while it waits for an operator, that is until it is replayed;
    ``include_replayed`` counts the replayed ones too. (The two once counted apart, and the
    API's count went on including what a replay had already stored.)
    """
    where, params = filters(
        reason=reason,
        gateway=gateway,
        sensor=sensor,
        since=since,
        until=until,
        include_replayed=include_replayed,
    )
    query = sql.SQL(
        "SELECT reason, count(*) FROM quarantine q WHERE {} GROUP BY reason ORDER BY 2 DESC, 1"
    ).format(where)
    rows = conn.execute(query, params).fetchall()
    return {str(reason_): int(count) for reason_, count in rows}  # type: ignore[call-overload]


def get(conn: Conn, entry_id: int) -> Entry | None:
    """The entry with this id, replayed or not; None when there is none."""
    query = sql.SQL("SELECT {} FROM {} WHERE q.id = %s").format(COLUMNS, FROM)
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, [entry_id]).fetchone()
