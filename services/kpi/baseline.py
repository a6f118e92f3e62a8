"""KPI baselines: the value of a reference period, recorded once per KPI and scope, against which
the engine reports progress (``KpiValue.baseline``).

A city records its baseline year (``set_baseline``); setting it again replaces it. Each KPI is
recorded for the city and for every district, with its coverage and quality, so a baseline built
on thin data says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from . import engine

Conn = psycopg.Connection[TupleRow]


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


def set_baseline(
    conn: Conn,
    start: datetime,
    end: datetime,
    kpi_ids: Iterable[str] | None = None,
    recorded_by: str | None = None,
) -> list[engine.KpiValue]:
    """Compute each KPI (default: every computed one) over [start, end) for the city and every
    district and record the values as baselines, in one transaction (committed here). Returns the
    values recorded. Raises UnknownKpi / InvalidPeriod like ``engine.compute``."""
    ids = list(kpi_ids) if kpi_ids is not None else engine.computed_kpis()
    recorded: list[engine.KpiValue] = []
    with conn.transaction():
        for kpi_id in ids:
            for value in engine.compute(conn, kpi_id, start, end):
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
                        kpi_id,
                        value.scope,
                        value.period_start,
                        value.period_end,
                        value.value,
                        value.coverage.ratio,
                        value.coverage.quality.value,
                        recorded_by,
                    ),
                )
                recorded.append(value)
    return recorded


def get_baselines(conn: Conn, kpi_id: str | None = None) -> list[Baseline]:
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
