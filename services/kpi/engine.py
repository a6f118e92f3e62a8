"""The KPI engine: computes catalog KPIs for a period (or a time series), rates them, and keeps
the current periods' values in ``kpi_current`` so that reads stay cheap.

- :func:`compute` runs a KPI's one SQL query (``services.kpi.queries``) over the buckets of a
  period and turns its rows into rated :class:`KpiValue` objects, one per bucket and scope
  (``"city"`` or a district id), with coverage and, when one is recorded, the baseline.
- :func:`refresh_current` recomputes the current day, month and year of every KPI and scope,
  stores them in ``kpi_current`` and writes a ``kpi`` event for every value whose value or rating
  changed, all in one transaction. The monitor calls it every minute, so a value read through
  :func:`current` is at most about a minute (plus the rollup refresh lag, one minute) old.

This module is the front: the parts live in ``errors.py`` (bad input), ``periods.py`` (calendar
arithmetic), ``rating.py`` (coverage, bands, rating, the rated value and its JSON), and in the
data layer ``services.storage.kpi_current`` (the current values' table) and
``services.storage.kpi_targets`` (targets and baselines). Their public names are
re-exported here, which is where the API, the CLI and the monitor take them from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from services.storage import events, kpi_current, kpi_targets
from services.storage.city_settings import load_settings
from services.storage.kpi_targets import CITY

from .catalog import KPIS, Band, Kpi
from .errors import InvalidPeriod, KpiError, UnknownDistrict, UnknownKpi
from .model import KpiQuery, KpiRow
from .periods import GRAINS, MAX_BUCKETS, buckets, period_bounds
from .queries import COMPUTATIONS
from .rating import (
    DAYS_PER_YEAR,
    OK_COVERAGE,
    BaselineRef,
    Coverage,
    KpiValue,
    Quality,
    Rating,
    annualise,
    coverage_of,
    rate,
    same_value,
    target_band,
    value_of,
)

__all__ = [
    "CITY",
    "CURRENT_PERIODS",
    "DAYS_PER_YEAR",
    "GRAINS",
    "MAX_BUCKETS",
    "OK_COVERAGE",
    "BaselineRef",
    "Coverage",
    "InvalidPeriod",
    "KpiError",
    "KpiValue",
    "Quality",
    "Rating",
    "UnknownDistrict",
    "UnknownKpi",
    "annualise",
    "buckets",
    "compute",
    "computed_kpis",
    "coverage_of",
    "current",
    "load_settings",
    "period_bounds",
    "rate",
    "refresh_current",
    "target_band",
]

Conn = psycopg.Connection[TupleRow]

CURRENT_PERIODS = ("day", "month", "year")


# --- reference data ----------------------------------------------------------------------------


def _targets(conn: Conn, kpi_id: str) -> dict[str, Band]:
    return {t.scope: Band(t.target, t.warning) for t in kpi_targets.targets(conn, kpi_id)}


def _districts(conn: Conn, wanted: Sequence[str] | None) -> list[str]:
    known = [str(r[0]) for r in conn.execute("SELECT id FROM districts ORDER BY id").fetchall()]
    if wanted is None:
        return known
    unknown = [d for d in wanted if d not in set(known)]
    if unknown:
        raise UnknownDistrict(unknown)
    return list(dict.fromkeys(wanted))


# --- compute -----------------------------------------------------------------------------------


def computed_kpis() -> list[str]:
    """Catalog KPI ids that have a computation, in catalog order."""
    return [kpi_id for kpi_id in KPIS if kpi_id in COMPUTATIONS]


def _kpi(kpi_id: str) -> Kpi:
    kpi = KPIS.get(kpi_id)
    if kpi is None:
        raise UnknownKpi(kpi_id)
    if kpi_id not in COMPUTATIONS:
        raise UnknownKpi(kpi_id, "in the catalog but not computed yet")
    return kpi


def compute(
    conn: Conn,
    kpi_id: str,
    start: datetime,
    end: datetime,
    *,
    grain: str | None = None,
    districts: Sequence[str] | None = None,
    include_city: bool = True,
) -> list[KpiValue]:
    """Rated values of ``kpi_id`` over [start, end): one per bucket of ``grain`` (None: the whole
    period) and scope (each district asked for, or all; then the city), ordered by bucket.

    Raises UnknownKpi, InvalidPeriod or UnknownDistrict (all ValueError) for bad input.
    """
    kpi = _kpi(kpi_id)
    settings = load_settings(conn)
    cuts = buckets(start, end, grain, settings.timezone)
    scopes = _districts(conn, districts)
    rows = COMPUTATIONS[kpi_id](conn, KpiQuery(cuts, districts, settings))
    by_key = {(r.bucket, r.district_id): r for r in rows}
    targets = _targets(conn, kpi_id)
    recorded = {b.scope: b for b in kpi_targets.baselines(conn, kpi_id)}
    values: list[KpiValue] = []
    for lower, upper in cuts:
        wanted: list[tuple[str, str | None]] = [(d, d) for d in scopes]
        if include_city:
            wanted.append((CITY, None))
        for scope, district_id in wanted:
            # A scope the query returned nothing for has no sensors of the kind: no data.
            row = by_key.get((lower, district_id)) or KpiRow(lower, district_id, None, 0, 0)
            values.append(
                value_of(
                    kpi,
                    row,
                    scope=scope,
                    start=lower,
                    end=upper,
                    now=datetime.now(UTC),
                    targets=targets,
                    recorded=recorded,
                )
            )
    return values


# --- current values ----------------------------------------------------------------------------


def current(
    conn: Conn,
    *,
    kpi_ids: Iterable[str] | None = None,
    scope: str | None = None,
    period: str = "day",
) -> list[dict[str, Any]]:
    """The stored current values (``as_dict`` bodies plus ``computed_at``), as of the last
    :func:`refresh_current`: at most about a minute old while the monitor runs."""
    if period not in GRAINS:
        raise InvalidPeriod(f"period {period!r} is not one of {', '.join(GRAINS)}", "period")
    ids = list(kpi_ids) if kpi_ids is not None else None
    return kpi_current.read(conn, period=period, kpi_ids=ids, scope=scope)


def refresh_current(
    conn: Conn,
    now: datetime | None = None,
    periods: Sequence[str] = CURRENT_PERIODS,
    *,
    kpi_ids: Iterable[str] | None = None,
) -> list[KpiValue]:
    """Recompute the current ``periods`` of every computed KPI (or of ``kpi_ids``) for every
    scope, upsert ``kpi_current`` and write a ``kpi`` event for each value whose value or rating
    changed, in one transaction (committed here). Returns the changed values.

    Freshness: the monitor calls this every minute, so ``kpi_current`` lags the rollups by at most
    a minute (and the rollups lag the readings by at most another in partition mode)."""
    moment = now or datetime.now(UTC)
    ids = [_kpi(k).id for k in kpi_ids] if kpi_ids is not None else computed_kpis()
    changed: list[KpiValue] = []
    news: list[tuple[str, KpiValue, dict[str, Any]]] = []
    with conn.transaction():
        kpi_current.lock_refresh(conn)
        timezone = load_settings(conn).timezone
        stored = kpi_current.stored(conn)
        for period in periods:
            start, end = period_bounds(period, moment, timezone)
            for kpi_id in ids:
                for value in compute(conn, kpi_id, start, end):
                    before = stored.get((kpi_id, value.scope, period))
                    body = value.as_dict()
                    kpi_current.upsert(
                        conn,
                        kpi_id=kpi_id,
                        scope=value.scope,
                        period=period,
                        bounds=(start, end),
                        value=value.value,
                        rating=value.rating.value,
                        body=body,
                    )
                    if (
                        before is not None
                        and same_value(before.value, value.value)
                        and before.rating == value.rating.value
                    ):
                        continue
                    changed.append(value)
                    news.append((period, value, body))
        # Last, just before the commit: the events lock orders every producer's events, the
        # ingestion writer's included, so it is held for the commit only, not the computing.
        for period, value, body in news:
            events.append(
                conn,
                "kpi",
                {**body, "period": period},
                district_id=None if value.scope == CITY else value.scope,
                domain=KPIS[value.kpi_id].domain.value,
            )
    return changed
