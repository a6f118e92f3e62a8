"""Evaluate every enabled rule once: raise, keep, or clear alerts, in one transaction.

Per rule and subject (see :mod:`.queries` for the states a subject is observed in):

- no open alert, ``raise``: with no minimum duration, raise now; otherwise record the condition
  in ``alert_conditions`` (``since`` = this evaluation) and raise once an evaluation finds it
  still holding ``duration_s`` later. Any other state drops a pending condition: the condition
  did not hold continuously (no data counts as not shown to hold).
- open alert, ``clear``: cleared by the engine (``cleared_by`` NULL). ``raise``, ``hold`` and
  ``nodata`` keep it open: hysteresis, and silence is not a recovery. A subject the rule no
  longer watches (sensor retired, rule moved to another district) has its alert cleared with a
  comment saying so; so do the open alerts of a disabled rule.

The open-alert index (one per rule and subject) makes a concurrent raise a no-op, and evaluators
take an advisory lock, so two evaluation loops never raise twice. Every raise and clear appends
an ``alert`` event in the same transaction, after the alert's own write, so that the live stream
sees a transition exactly when it commits.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from services.storage import events

from .errors import InvalidRule
from .messages import describe
from .model import ALERT_COLUMNS, Alert, EvaluationResult, alert_from_row
from .queries import observe
from .rules import Rule, Subject, load_rules

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key serialising evaluators ("ALRT" in ASCII).
EVALUATE_LOCK = 0x414C5254

_RAISE = f"""
    INSERT INTO alerts (rule_id, subject_id, district_id, domain, state, severity, message, value,
                        raised_at, updated_at)
    VALUES (%(rule_id)s, %(subject_id)s, %(district_id)s, %(domain)s, 'raised', %(severity)s,
            %(message)s, %(value)s, %(now)s, %(now)s)
    ON CONFLICT (rule_id, subject_id) WHERE state <> 'cleared' DO NOTHING
    RETURNING {ALERT_COLUMNS}
"""  # noqa: S608 (the column list is the Alert model's field names)

_AUTO_CLEAR = f"""
    UPDATE alerts SET state = 'cleared', cleared_at = %(now)s, cleared_by = NULL,
                      clear_comment = %(comment)s, updated_at = %(now)s
    WHERE id = %(id)s AND state <> 'cleared'
    RETURNING {ALERT_COLUMNS}
"""  # noqa: S608 (as above)

_CLEAR_DISABLED = f"""
    UPDATE alerts SET state = 'cleared', cleared_at = %(now)s, cleared_by = NULL,
                      clear_comment = 'rule disabled', updated_at = %(now)s
    WHERE state <> 'cleared' AND rule_id IN (SELECT id FROM alert_rules WHERE NOT enabled)
    RETURNING {ALERT_COLUMNS},
              (SELECT subject FROM alert_rules r WHERE r.id = alerts.rule_id) AS rule_subject
"""  # noqa: S608 (as above)

OUT_OF_SCOPE = "no longer watched by this rule (retired, moved, or out of its scope)"


def data_horizon(conn: psycopg.Connection[Any], now: datetime) -> datetime:
    """The time up to which the rollups are complete: ``now`` with TimescaleDB (real-time
    aggregation), the refresh watermark in partition mode when it lags behind ``now``."""
    row = conn.execute(
        "SELECT (SELECT value FROM storage_settings WHERE name = 'mode'), "
        "(SELECT watermark FROM rollup_watermarks WHERE name = 'rollups')"
    ).fetchone()
    if row is None or row[0] == "timescaledb" or row[1] is None:
        return now
    watermark: datetime = row[1]
    return min(now, watermark)


class _Run:
    """One evaluation's writes and counts."""

    def __init__(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        self.conn = conn
        self.now = now
        self.raised = 0
        self.cleared = 0
        # (alert, sensor id) per transition, appended to the event log at the end.
        self.transitions: list[tuple[Alert, str | None]] = []

    def rule(self, rule: Rule, horizon: datetime) -> None:
        for row in observe(self.conn, rule, horizon, self.now):
            if row["alert_id"] is not None:
                self._open(rule, row)
            elif row["state"] == "raise":
                self._holding(rule, row)
            elif row["since"] is not None:
                self._forget(rule, row["subject_id"])

    def _open(self, rule: Rule, row: dict[str, Any]) -> None:
        if row["since"] is not None:
            self._forget(rule, row["subject_id"])
        if row["state"] == "clear":
            self._clear(rule, row["alert_id"], None)
        elif row["state"] is None:
            self._clear(rule, row["alert_id"], OUT_OF_SCOPE)

    def _holding(self, rule: Rule, row: dict[str, Any]) -> None:
        since: datetime | None = row["since"]
        if rule.duration_s > 0:
            if since is None:
                self.conn.execute(
                    "INSERT INTO alert_conditions (rule_id, subject_id, since, value) "
                    "VALUES (%s, %s, %s, %s)",
                    (rule.id, row["subject_id"], self.now, row["value"]),
                )
                return
            if self.now - since < timedelta(seconds=rule.duration_s):
                self.conn.execute(
                    "UPDATE alert_conditions SET value = %s WHERE rule_id = %s AND subject_id = %s",
                    (row["value"], rule.id, row["subject_id"]),
                )
                return
            self._forget(rule, row["subject_id"])
        with self.conn.cursor(row_factory=dict_row) as cur:
            raised = cur.execute(
                _RAISE,
                {
                    "rule_id": rule.id,
                    "subject_id": row["subject_id"],
                    "district_id": row["district_id"],
                    "domain": row["domain"],
                    "severity": rule.severity.value,
                    "message": describe(rule, row["subject_id"], row["value"], row["detail"]),
                    "value": row["value"],
                    "now": self.now,
                },
            ).fetchone()
        if raised is not None:  # else another writer raised it first: one open alert
            self.raised += 1
            self._transition(rule.subject, alert_from_row(raised))

    def _clear(self, rule: Rule, alert_id: int, comment: str | None) -> None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cleared = cur.execute(
                _AUTO_CLEAR, {"id": alert_id, "now": self.now, "comment": comment}
            ).fetchone()
        if cleared is not None:  # else a person cleared it meanwhile
            self.cleared += 1
            self._transition(rule.subject, alert_from_row(cleared))

    def _forget(self, rule: Rule, subject_id: str) -> None:
        self.conn.execute(
            "DELETE FROM alert_conditions WHERE rule_id = %s AND subject_id = %s",
            (rule.id, subject_id),
        )

    def disabled(self) -> None:
        self.conn.execute(
            "DELETE FROM alert_conditions "
            "WHERE rule_id IN (SELECT id FROM alert_rules WHERE NOT enabled)"
        )
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(_CLEAR_DISABLED, {"now": self.now}).fetchall()
        for row in rows:
            subject = row.pop("rule_subject")
            self.cleared += 1
            self._transition(subject, alert_from_row(row))

    def _transition(self, subject: str, alert: Alert) -> None:
        self.transitions.append((alert, alert.subject_id if subject == Subject.SENSOR else None))


def append_event(conn: psycopg.Connection[Any], alert: Alert, sensor_id: str | None) -> None:
    """The ``alert`` event of one transition: the alert as its API shows it."""
    events.append(
        conn,
        "alert",
        alert.model_dump(mode="json"),
        district_id=alert.district_id,
        domain=alert.domain,
        sensor_id=sensor_id,
    )


def evaluate(conn: psycopg.Connection[Any], now: datetime | None = None) -> EvaluationResult:
    """Evaluate every enabled rule at ``now`` (default: the current time) and apply the
    transitions; atomic (a savepoint if the caller has a transaction open, else committed).

    A rule row that no longer validates is skipped and named in the result (and logged).
    """
    now = now or datetime.now(UTC)
    run = _Run(conn, now)
    invalid: list[InvalidRule] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVALUATE_LOCK,))
        horizon = data_horizon(conn, now)
        rules = load_rules(conn, enabled=True, invalid=invalid)
        for rule in rules:
            run.rule(rule, horizon)
        run.disabled()
        # Last, so that the events lock (which orders every producer's commit) is held for
        # the shortest time.
        for alert, sensor_id in run.transitions:
            append_event(conn, alert, sensor_id)
        row = conn.execute(
            "SELECT (SELECT count(*) FROM alerts WHERE state <> 'cleared'), "
            "(SELECT count(*) FROM alert_conditions)"
        ).fetchone()
    for error in invalid:
        log.error("alert rule skipped: %s", error)
    assert row is not None
    return EvaluationResult(
        raised=run.raised,
        cleared=run.cleared,
        open=int(row[0]),
        pending=int(row[1]),
        rules=len(rules),
        invalid_rules=tuple(str(e.rule_id) for e in invalid),
    )
