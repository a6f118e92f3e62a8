"""Builders for the alert tests, on top of the KPI tests' hand-built ``city`` (../conftest.py):
install chosen default rules (optionally edited), and read back alerts and events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from services.kpi.alerts import DEFAULT_RULES, Rule, parse_rule, upsert_rule

Conn = psycopg.Connection[tuple[object, ...]]

# A weekday in the past: partition-mode rollups are complete there, whatever the clock says.
T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)

DEFAULTS = {rule.id: rule for rule in DEFAULT_RULES}

Install = Callable[..., Rule]


@pytest.fixture
def install(db: Conn) -> Install:
    """``install(rule_id, **changes)``: store one default rule, edited by ``changes``."""

    def install_one(rule_id: str, **changes: Any) -> Rule:
        rule = parse_rule({**DEFAULTS[rule_id].model_dump(), **changes})
        upsert_rule(db, rule)
        db.commit()
        return rule

    return install_one


def alert_rows(db: Conn, rule_id: str | None = None) -> list[dict[str, Any]]:
    """Every alert (of one rule), oldest first, as dicts."""
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM alerts WHERE %(rule)s::text IS NULL OR rule_id = %(rule)s ORDER BY id",
            {"rule": rule_id},
        ).fetchall()


def alert_events(db: Conn) -> list[tuple[Any, ...]]:
    """(district, domain, sensor, alert id, state) of every alert event, in id order."""
    return db.execute(
        "SELECT district_id, domain, sensor_id, (data->>'id')::bigint, data->>'state' "
        "FROM events WHERE type = 'alert' ORDER BY id"
    ).fetchall()
