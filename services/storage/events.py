"""The event log behind the live stream: new readings, KPI updates and alerts, in commit order.

Producers append in the transaction that made the change, so an event exists exactly when its
change committed: the ingestion writer appends one ``readings`` event per stored batch (the new
rows only, duplicates left out), the KPI monitor one ``kpi`` event per changed value, the alert
engine one ``alert`` event per transition.

Readers follow ``id``, and "after the last id delivered" must be a safe resume point. Identity
values are handed out before commit, so on their own a transaction holding id 10 could commit
after one holding id 11, and a reader that saw 11 first would never see 10. Producers therefore
take a transaction-scoped advisory lock (:data:`EVENTS_LOCK`) before appending: event ids are
then handed out in commit order (PostgreSQL makes a commit visible before it releases its locks).
The price is that producers' transactions serialise from their first event to their commit, so
every producer appends its events last, just before committing (the ingestion writer's batch, the
KPI monitor's changed values, the alert engine's transitions): the lock is held for a commit,
never for a computation.

The log is short-lived by design: :func:`prune` drops events older than the retention, which
bounds how far back a client may resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

EVENT_TYPES = ("readings", "kpi", "alert")
# pg_advisory_xact_lock key that orders event ids by commit ("UPLS" in ASCII).
EVENTS_LOCK = 0x55504C53


def lock(conn: psycopg.Connection[TupleRow]) -> None:
    """Take the events lock for the rest of the caller's transaction (see the module docstring)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))


# A new reading in a ``readings`` event: (sensor key, quantity key, time, value).
NewReading = tuple[int, int, datetime, float]


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    time: datetime
    type: str
    district_id: str | None
    domain: str | None
    sensor_id: str | None
    data: dict[str, Any]
    readings: list[NewReading] | None = None


def append(
    conn: psycopg.Connection[TupleRow],
    type_: str,
    data: dict[str, Any],
    *,
    district_id: str | None = None,
    domain: str | None = None,
    sensor_id: str | None = None,
) -> int:
    """Append one event in the caller's transaction; returns its id."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}; one of {', '.join(EVENT_TYPES)}")
    lock(conn)
    row = conn.execute(
        "INSERT INTO events (type, district_id, domain, sensor_id, data) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (type_, district_id, domain, sensor_id, Jsonb(data)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def read_after(
    conn: psycopg.Connection[TupleRow],
    after_id: int,
    *,
    types: Sequence[str] | None = None,
    limit: int = 500,
    max_readings: int | None = None,
) -> list[Event]:
    """Committed events with ``id > after_id``, oldest first: at most ``limit`` events and, with
    ``max_readings``, only as many events as keep their readings within it (the first event always
    comes, however many it holds, so a reader always moves on)."""
    rows = conn.execute(
        "SELECT id, time, type, district_id, domain, sensor_id, data, sensor_keys, "
        "quantity_keys, times, readings FROM ("
        "  SELECT *, sum(coalesce(cardinality(sensor_keys), 0)) OVER (ORDER BY id) AS upto,"
        "    coalesce(cardinality(sensor_keys), 0) AS own"
        "  FROM (SELECT * FROM events"
        "    WHERE id > %s AND (%s::text[] IS NULL OR type = ANY(%s::text[]))"
        "    ORDER BY id LIMIT %s) AS page"
        ") AS counted "
        "WHERE %s::bigint IS NULL OR upto <= %s::bigint OR upto = own ORDER BY id",
        (after_id, types, types, limit, max_readings, max_readings),
    ).fetchall()
    return [
        Event(
            id_,
            time,
            type_,
            district_id,
            domain,
            sensor_id,
            data,
            None if keys is None else list(zip(keys, quantities, times, values, strict=True)),
        )
        for (
            id_,
            time,
            type_,
            district_id,
            domain,
            sensor_id,
            data,
            keys,
            quantities,
            times,
            values,
        ) in rows
    ]


def last_id(conn: psycopg.Connection[TupleRow]) -> int:
    """The newest committed event's id (0 when none): where a new subscriber starts."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


def oldest_id(conn: psycopg.Connection[TupleRow]) -> int | None:
    row = conn.execute("SELECT min(id) FROM events").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def prune(conn: psycopg.Connection[TupleRow], retention: timedelta) -> int:
    """Delete events older than ``retention``; returns how many."""
    cur = conn.execute("DELETE FROM events WHERE time < now() - %s", (retention,))
    return max(cur.rowcount, 0)
