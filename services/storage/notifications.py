"""The notifier's tables (migration 0010): subscriptions, the outbox ``notifications`` and the
cursor over ``events``. This module is their one writer; ``services.notify`` decides what goes in.

Exactly once per (alert transition, subscription, channel): rows are enqueued with
``ON CONFLICT DO NOTHING`` on that unique key, in the same transaction that moves the cursor, so a
notifier stopped anywhere enqueues each transition once when it starts again. Delivery claims due
rows ``FOR UPDATE SKIP LOCKED`` (two notifiers never send one row at once) and marks each row sent
in the transaction that claimed it; only a crash between a receiver's answer and that commit sends
a row again, which is why every delivery carries its row id for the receiver to deduplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

SUBSCRIPTION_FIELDS = (
    "id, name, channel, target, secret, rule_ids, district_ids, min_severity, transitions, "
    "escalate_after_s, escalate_to, enabled, created_at"
)
NOTIFICATION_FIELDS = (
    "id, alert_id, transition, event_id, subscription_id, channel, target, payload, status, "
    "attempts, next_attempt_at, last_error, created_at, sent_at, dead_at"
)
Row = dict[str, Any]


def add_subscription(conn: psycopg.Connection[Any], columns: Row) -> Row:
    """Store a checked subscription (``services.notify.model.check_subscription``)."""
    names = ", ".join(columns)
    values = ", ".join(f"%({name})s" for name in columns)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"INSERT INTO notification_subscriptions ({names}) VALUES ({values}) "  # noqa: S608 (names are the checked columns)
            f"RETURNING {SUBSCRIPTION_FIELDS}",
            columns,
        ).fetchone()
    assert row is not None
    return row


def _rows(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _outbox(conn: psycopg.Connection[Any], where: str, params: tuple[Any, ...]) -> list[Row]:
    """Outbox rows ``where`` (a constant condition with its ORDER BY, LIMIT, locking)."""
    return _rows(conn, f"SELECT {NOTIFICATION_FIELDS} FROM notifications WHERE {where}", params)  # noqa: S608 (constants)


def subscriptions(conn: psycopg.Connection[Any], *, enabled_only: bool = False) -> list[Row]:
    return _rows(
        conn,
        f"SELECT {SUBSCRIPTION_FIELDS} FROM notification_subscriptions "  # noqa: S608 (constant)
        "WHERE NOT %s OR enabled ORDER BY id",
        (enabled_only,),
    )


def remove_subscription(conn: psycopg.Connection[Any], id: int) -> bool:
    """Delete a subscription and its outbox rows; False when there is none."""
    cur = conn.execute("DELETE FROM notification_subscriptions WHERE id = %s", (id,))
    return cur.rowcount > 0


def existing_rules(conn: psycopg.Connection[Any], rule_ids: Iterable[str]) -> set[str]:
    rows = conn.execute(
        "SELECT id FROM alert_rules WHERE id = ANY(%s::text[])", (list(rule_ids),)
    ).fetchall()
    return {str(row[0]) for row in rows}


def cursor(conn: psycopg.Connection[Any], name: str) -> int:
    """The last event id the notifier ``name`` enqueued from (0 before its first run)."""
    row = conn.execute(
        "SELECT last_event_id FROM notify_cursor WHERE name = %s", (name,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def move_cursor(conn: psycopg.Connection[Any], name: str, last_event_id: int) -> None:
    conn.execute(
        "INSERT INTO notify_cursor (name, last_event_id) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET last_event_id = excluded.last_event_id",
        (name, last_event_id),
    )


def enqueue(conn: psycopg.Connection[Any], rows: Iterable[Row], now: datetime) -> int:
    """Add outbox rows (alert_id, transition, event_id, subscription_id, channel, target,
    payload), due at ``now``; a row whose key is already there is left alone. Returns how many
    were added."""
    added = 0
    for row in rows:
        cur = conn.execute(
            "INSERT INTO notifications "
            "(alert_id, transition, event_id, subscription_id, channel, target, payload, "
            "next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (alert_id, transition, subscription_id, channel) DO NOTHING",
            (
                row["alert_id"],
                row["transition"],
                row.get("event_id"),
                row["subscription_id"],
                row["channel"],
                row["target"],
                Jsonb(row["payload"]),
                now,
            ),
        )
        added += max(cur.rowcount, 0)
    return added


def unescalated(conn: psycopg.Connection[Any], now: datetime) -> list[tuple[Row, int]]:
    """(alert, subscription id) of every alert still ``raised`` past a subscription's
    escalation delay, raised after that subscription was made, and not escalated to it yet."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT s.id AS subscription_id, to_jsonb(a) AS alert "
            "FROM notification_subscriptions s JOIN alerts a "
            "  ON a.state = 'raised' AND a.raised_at >= s.created_at"
            "  AND a.raised_at <= %s - s.escalate_after_s * interval '1 second' "
            "WHERE s.enabled AND s.escalate_after_s IS NOT NULL AND NOT EXISTS ("
            "  SELECT FROM notifications n WHERE n.alert_id = a.id"
            "  AND n.subscription_id = s.id AND n.transition = 'escalated') "
            "ORDER BY a.id, s.id",
            (now,),
        ).fetchall()
    return [(row["alert"], int(row["subscription_id"])) for row in rows]


def claim_due(conn: psycopg.Connection[Any], now: datetime, limit: int) -> list[Row]:
    """Pending rows due at ``now``, locked for the caller's transaction (others skip them)."""
    return _outbox(
        conn,
        "status = 'pending' AND next_attempt_at <= %s "
        "ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
        (now, limit),
    )


def mark_sent(conn: psycopg.Connection[Any], id: int, now: datetime) -> None:
    conn.execute(
        "UPDATE notifications SET status = 'sent', sent_at = %s, attempts = attempts + 1, "
        "last_error = NULL WHERE id = %s",
        (now, id),
    )


def mark_failed(
    conn: psycopg.Connection[Any], id: int, error: str, *, retry_at: datetime | None, now: datetime
) -> None:
    """One more failed attempt: retried at ``retry_at``, or dead (a dead letter) when None."""
    conn.execute(
        "UPDATE notifications SET attempts = attempts + 1, last_error = %s, "
        "status = CASE WHEN %s::timestamptz IS NULL THEN 'dead' ELSE 'pending' END, "
        "next_attempt_at = coalesce(%s::timestamptz, next_attempt_at), "
        "dead_at = CASE WHEN %s::timestamptz IS NULL THEN %s ELSE NULL END WHERE id = %s",
        (error[:2000], retry_at, retry_at, retry_at, now, id),
    )


def dead_letters(conn: psycopg.Connection[Any], limit: int = 100) -> list[Row]:
    """Dead letters, newest first."""
    return _outbox(conn, "status = 'dead' ORDER BY dead_at DESC, id DESC LIMIT %s", (limit,))


def replay(conn: psycopg.Connection[Any], id: int) -> Row | None:
    """Make a dead letter pending again with fresh attempts; None when ``id`` is not dead."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "UPDATE notifications SET status = 'pending', attempts = 0, dead_at = NULL, "  # noqa: S608 (constant)
            "next_attempt_at = now() WHERE id = %s AND status = 'dead' "
            f"RETURNING {NOTIFICATION_FIELDS}",
            (id,),
        ).fetchone()


def notifications_of(conn: psycopg.Connection[Any], alert_id: int) -> list[Row]:
    return _outbox(conn, "alert_id = %s ORDER BY id", (alert_id,))
