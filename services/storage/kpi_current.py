"""The current KPI values (table ``kpi_current``): the current day, month and year of every KPI and
scope as the KPI engine last computed them, so that reads stay cheap.

The one module with this table's SQL: the engine's ``refresh_current`` writes through it (the
monitor calls that every minute), and ``engine.current`` and the NGSI-LD view read through it. Each
row keeps the rated value's JSON body as the engine made it; this module does not interpret it.

SQL written elsewhere reads the table through the names this module owns: the alert rules'
``kpi_band`` query selects from :data:`CURRENT_ROWS`, and the dashboards' panels (SQL that Grafana
runs, so it cannot call Python) name :data:`TABLE` and only :data:`COLUMNS`; a test holds
:data:`COLUMNS` to the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow, dict_row
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[TupleRow]

TABLE = "kpi_current"
# Every column, in the schema's order: what other modules' SQL may name.
COLUMNS = (
    "kpi_id",
    "scope",
    "period",
    "period_start",
    "period_end",
    "value",
    "rating",
    "body",
    "computed_at",
)
# The current values as a relation for other modules' SQL: ``FROM ({CURRENT_ROWS}) k``.
# PostgreSQL pulls a plain subquery up into the query around it, so it costs nothing.
CURRENT_ROWS = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - constants

# pg_advisory_xact_lock key: one refresher at a time (the rollups' refresh uses 7_210_002).
REFRESH_LOCK = 7_210_003


@dataclass(frozen=True, slots=True)
class Stored:
    """What a row holds that says whether a new computation changed it."""

    value: float | None
    rating: str


def lock_refresh(conn: Conn) -> None:
    """Take the refresh lock for the rest of the caller's transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (REFRESH_LOCK,))


def stored(conn: Conn) -> dict[tuple[str, str, str], Stored]:
    """Every row's value and rating, by (KPI id, scope, period)."""
    return {
        (str(k), str(s), str(p)): Stored(v, str(r))
        for k, s, p, v, r in conn.execute(
            "SELECT kpi_id, scope, period, value, rating FROM kpi_current"
        ).fetchall()
    }


def upsert(
    conn: Conn,
    *,
    kpi_id: str,
    scope: str,
    period: str,
    bounds: tuple[datetime, datetime],
    value: float | None,
    rating: str,
    body: dict[str, Any],
) -> None:
    """Store one current value, computed now (the caller commits)."""
    conn.execute(
        "INSERT INTO kpi_current (kpi_id, scope, period, period_start, "
        "period_end, value, rating, body, computed_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "ON CONFLICT (kpi_id, scope, period) DO UPDATE SET "
        "period_start = excluded.period_start, period_end = excluded.period_end, "
        "value = excluded.value, rating = excluded.rating, body = excluded.body, "
        "computed_at = excluded.computed_at",
        (kpi_id, scope, period, bounds[0], bounds[1], value, rating, Jsonb(body)),
    )


def rows(conn: Conn) -> list[dict[str, Any]]:
    """Every current value (each KPI, scope and period) by column name, without its JSON body,
    ordered by KPI, scope and period."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT kpi_id, scope, period, period_start, period_end, value, rating, computed_at "
            "FROM kpi_current ORDER BY kpi_id, scope, period"
        ).fetchall()


def read(
    conn: Conn, *, period: str, kpi_ids: Sequence[str] | None, scope: str | None
) -> list[dict[str, Any]]:
    """The stored bodies of ``period`` (of ``kpi_ids`` and ``scope``; None: all) with their
    ``computed_at``, ordered by KPI, the city first."""
    ids = list(kpi_ids) if kpi_ids is not None else None
    rows = conn.execute(
        "SELECT body, computed_at FROM kpi_current WHERE period = %s "
        "AND (%s::text[] IS NULL OR kpi_id = ANY(%s::text[])) "
        "AND (%s::text IS NULL OR scope = %s) ORDER BY kpi_id, scope <> 'city', scope",
        (period, ids, ids, scope, scope),
    ).fetchall()
    return [{**body, "computed_at": computed_at.isoformat()} for body, computed_at in rows]
