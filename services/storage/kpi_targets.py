"""KPI targets and baselines: the city's overrides of the catalog's targets (table
``kpi_targets``) and the recorded baseline values (table ``kpi_baselines``).

The one module with these tables' SQL: the KPI engine reads targets and baselines through it to
rate values and report progress, the ``urbanpulse kpi`` commands set them through it, the API
lists baselines through it. What makes a band valid (the warning limit on the bad side of the
target) is the KPI core's rule (``services.kpi.rating.checked_band``); what is stored here has
passed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from .city_settings import UnknownDistrictError

Conn = psycopg.Connection[TupleRow]

CITY = "city"  # the scope of the whole city (and of every district without its own target)


@dataclass(frozen=True, slots=True)
class Target:
    """A KPI's target and warning limit for a scope."""

    scope: str
    target: float
    warning: float


@dataclass(frozen=True, slots=True)
class Baseline:
    kpi_id: str
    scope: str  # "city" or a district id
    period_start: datetime
    period_end: datetime
    value: float | None
    coverage: float | None
    quality: str
    recorded_at: datetime
    recorded_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kpi_id": self.kpi_id,
            "scope": self.scope,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "value": self.value,
            "coverage": self.coverage,
            "quality": self.quality,
            "recorded_at": self.recorded_at.isoformat(),
            "recorded_by": self.recorded_by,
        }


@dataclass(frozen=True, slots=True)
class NewBaseline:
    """A baseline to record: a KPI's value for a scope over its reference period."""

    kpi_id: str
    scope: str
    period_start: datetime
    period_end: datetime
    value: float | None
    coverage: float
    quality: str


def set_target(
    conn: Conn, kpi_id: str, *, district: str | None, target: float, warning: float
) -> Target:
    """Store ``kpi_id``'s target for ``district`` (None: the city), replacing any (the caller
    commits). Raises UnknownDistrictError when no district has that id."""
    if (
        district is not None
        and not conn.execute("SELECT 1 FROM districts WHERE id = %s", (district,)).fetchone()
    ):
        raise UnknownDistrictError(district)
    stored = Target(district or CITY, target, warning)
    conn.execute(
        "INSERT INTO kpi_targets (kpi_id, scope, target, warning, updated_at) "
        "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (kpi_id, scope) DO UPDATE SET "
        "target = excluded.target, warning = excluded.warning, updated_at = now()",
        (kpi_id, stored.scope, stored.target, stored.warning),
    )
    return stored


def targets(conn: Conn, kpi_id: str) -> list[Target]:
    """``kpi_id``'s stored targets, one per scope that has one."""
    rows = conn.execute(
        "SELECT scope, target, warning FROM kpi_targets WHERE kpi_id = %s", (kpi_id,)
    ).fetchall()
    return [Target(str(scope), float(target), float(warning)) for scope, target, warning in rows]


def record_baselines(conn: Conn, baselines: Sequence[NewBaseline], recorded_by: str | None) -> None:
    """Record each baseline, replacing the KPI's and scope's earlier one (the caller commits)."""
    for b in baselines:
        conn.execute(
            "INSERT INTO kpi_baselines (kpi_id, scope, period_start, period_end, value, "
            "coverage, quality, recorded_at, recorded_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, now(), %s) "
            "ON CONFLICT (kpi_id, scope) DO UPDATE SET "
            "period_start = excluded.period_start, period_end = excluded.period_end, "
            "value = excluded.value, coverage = excluded.coverage, "
            "quality = excluded.quality, recorded_at = excluded.recorded_at, "
            "recorded_by = excluded.recorded_by",
            (
                b.kpi_id,
                b.scope,
                b.period_start,
                b.period_end,
                b.value,
                b.coverage,
                b.quality,
                recorded_by,
            ),
        )


def baselines(conn: Conn, kpi_id: str | None = None) -> list[Baseline]:
    """The recorded baselines (of one KPI, or all), city first within each KPI."""
    rows = conn.execute(
        "SELECT kpi_id, scope, period_start, period_end, value, coverage, quality, recorded_at, "
        "recorded_by FROM kpi_baselines WHERE %s::text IS NULL OR kpi_id = %s "
        "ORDER BY kpi_id, scope <> 'city', scope",
        (kpi_id, kpi_id),
    ).fetchall()
    return [
        Baseline(
            kpi_id=str(k),
            scope=str(scope),
            period_start=start,
            period_end=end,
            value=None if value is None else float(value),
            coverage=None if coverage is None else float(coverage),
            quality=str(quality),
            recorded_at=recorded_at,
            recorded_by=None if by is None else str(by),
        )
        for k, scope, start, end, value, coverage, quality, recorded_at, by in rows
    ]
