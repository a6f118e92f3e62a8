"""KPI baselines: the value of a reference period, recorded once per KPI and scope, against which
the engine reports progress (``KpiValue.baseline``).

A city records its baseline year (``set_baseline``); setting it again replaces it. Each KPI is
recorded for the city and for every district, with its coverage and quality, so a baseline built
on thin data says so. The table is ``services.storage.kpi_targets``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import psycopg
from psycopg.rows import TupleRow

from services.storage import kpi_targets
from services.storage.kpi_targets import Baseline

from . import engine

__all__ = ["Baseline", "get_baselines", "set_baseline"]

Conn = psycopg.Connection[TupleRow]


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
            values = engine.compute(conn, kpi_id, start, end)
            kpi_targets.record_baselines(
                conn,
                [
                    kpi_targets.NewBaseline(
                        kpi_id,
                        value.scope,
                        value.period_start,
                        value.period_end,
                        value.value,
                        value.coverage.ratio,
                        value.coverage.quality.value,
                    )
                    for value in values
                ],
                recorded_by,
            )
            recorded.extend(values)
    return recorded


def get_baselines(conn: Conn, kpi_id: str | None = None) -> list[Baseline]:
    """The recorded baselines (of one KPI, or all), city first within each KPI."""
    return kpi_targets.baselines(conn, kpi_id)
