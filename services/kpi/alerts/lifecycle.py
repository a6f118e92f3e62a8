"""Alerts as people handle them: list, read, acknowledge, clear.

Each action is atomic and appends its ``alert`` event in the same transaction (a savepoint when
the caller has one open, else its own committed transaction). Refusals are exceptions an API maps
directly: :class:`AlertNotFound` (404), :class:`InvalidTransition` (409), :class:`InvalidArgument`
(422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .errors import AlertNotFound, InvalidArgument, InvalidTransition
from .evaluate import append_event
from .model import ALERT_COLUMNS, OPEN, Alert, AlertState, alert_from_row
from .rules import Severity, Subject

MAX_LIMIT = 1000

_LIST = f"""
    SELECT {ALERT_COLUMNS} FROM alerts
    WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
      AND (%(severity)s::text IS NULL OR severity = %(severity)s::text)
      AND (%(district)s::text IS NULL OR district_id = %(district)s::text)
      AND (%(domain)s::text IS NULL OR domain = %(domain)s::text)
      AND (%(rule_id)s::text IS NULL OR rule_id = %(rule_id)s::text)
      AND (%(since)s::timestamptz IS NULL OR raised_at >= %(since)s::timestamptz)
      AND (%(after_id)s::bigint IS NULL OR id < %(after_id)s::bigint)
    ORDER BY id DESC
    LIMIT %(limit)s
"""  # noqa: S608 (the column list is the Alert model's field names)

_ACKNOWLEDGE = f"""
    UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %(by)s,
                      ack_comment = %(comment)s, updated_at = now()
    WHERE id = %(id)s
    RETURNING {ALERT_COLUMNS}
"""  # noqa: S608 (as above)

_CLEAR = f"""
    UPDATE alerts SET state = 'cleared', cleared_at = now(), cleared_by = %(by)s,
                      clear_comment = %(comment)s, updated_at = now()
    WHERE id = %(id)s
    RETURNING {ALERT_COLUMNS}
"""  # noqa: S608 (as above)


def _states(state: str | None) -> list[str] | None:
    if state is None:
        return None
    if state == OPEN:
        return [AlertState.RAISED.value, AlertState.ACKNOWLEDGED.value]
    if state not in AlertState.__members__.values():
        raise InvalidArgument("state", state, "one of open, raised, acknowledged, cleared")
    return [state]


def list_alerts(
    conn: psycopg.Connection[Any],
    *,
    state: str | None = None,
    severity: str | None = None,
    district: str | None = None,
    domain: str | None = None,
    rule_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[Alert]:
    """Alerts, newest first, filtered by every argument given.

    ``state``: raised, acknowledged, cleared, or ``open`` (raised or acknowledged).
    ``since``: raised at or after. Pages: pass the last id of a page as ``after_id`` to get the
    next (older) one. ``limit``: 1..1000.
    """
    if severity is not None and severity not in Severity.__members__.values():
        raise InvalidArgument("severity", severity, "one of info, warning, critical")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument("limit", limit, f"between 1 and {MAX_LIMIT}")
    params = {
        "states": _states(state),
        "severity": severity,
        "district": district,
        "domain": domain,
        "rule_id": rule_id,
        "since": since,
        "after_id": after_id,
        "limit": limit,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        return [alert_from_row(row) for row in cur.execute(_LIST, params).fetchall()]


def get_alert(conn: psycopg.Connection[Any], id: int) -> Alert:
    """The alert ``id``; raises AlertNotFound."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s",  # noqa: S608 (as above)
            (id,),
        ).fetchone()
    if row is None:
        raise AlertNotFound(id)
    return alert_from_row(row)


def _who(by: str) -> str:
    if not isinstance(by, str) or not by.strip():
        raise InvalidArgument("by", by, "the name of who acts, not empty")
    return by.strip()


def _transition(
    conn: psycopg.Connection[Any],
    alert_id: int,
    *,
    allowed: tuple[AlertState, ...],
    action: str,
    statement: str,
    by: str,
    comment: str | None,
) -> Alert:
    who = _who(by)
    with conn.transaction():
        row = conn.execute(
            "SELECT a.state, r.subject FROM alerts a JOIN alert_rules r ON r.id = a.rule_id "
            "WHERE a.id = %s FOR UPDATE OF a",
            (alert_id,),
        ).fetchone()
        if row is None:
            raise AlertNotFound(alert_id)
        state, subject = str(row[0]), str(row[1])
        if state not in allowed:
            raise InvalidTransition(alert_id, state, action)
        with conn.cursor(row_factory=dict_row) as cur:
            updated = cur.execute(
                statement, {"id": alert_id, "by": who, "comment": comment}
            ).fetchone()
        assert updated is not None  # the row is locked since the SELECT
        alert = alert_from_row(updated)
        append_event(conn, alert, alert.subject_id if subject == Subject.SENSOR else None)
    return alert


def acknowledge(
    conn: psycopg.Connection[Any],
    id: int,
    by: str,
    comment: str | None = None,
) -> Alert:
    """Acknowledge a raised alert: ``by`` (who) takes it in hand, with an optional comment.

    Raises AlertNotFound, or InvalidTransition when it is already acknowledged or cleared.
    """
    return _transition(
        conn,
        id,
        allowed=(AlertState.RAISED,),
        action="acknowledged",
        statement=_ACKNOWLEDGE,
        by=by,
        comment=comment,
    )


def clear(
    conn: psycopg.Connection[Any],
    id: int,
    by: str,
    comment: str | None = None,
) -> Alert:
    """Clear an open (raised or acknowledged) alert by hand. If its condition still holds, the
    next evaluation raises a new alert.

    Raises AlertNotFound, or InvalidTransition when it is already cleared.
    """
    return _transition(
        conn,
        id,
        allowed=(AlertState.RAISED, AlertState.ACKNOWLEDGED),
        action="cleared",
        statement=_CLEAR,
        by=by,
        comment=comment,
    )
