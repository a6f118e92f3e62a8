"""The KPI engine: computes catalog KPIs for a period (or a time series), rates them, and keeps
the current periods' values in ``kpi_current`` so that reads stay cheap.

- :func:`compute` runs a KPI's one SQL query (``services.kpi.queries``) over the buckets of a
  period and turns its rows into rated :class:`KpiValue` objects, one per bucket and scope
  (``"city"`` or a district id), with coverage and, when one is recorded, the baseline.
- :func:`refresh_current` recomputes the current day, month and year of every KPI and scope,
  stores them in ``kpi_current`` and writes a ``kpi`` event for every value whose value or rating
  changed, all in one transaction. The monitor calls it every minute, so a value read through
  :func:`current` is at most about a minute (plus the rollup refresh lag, one minute) old.

Rating (``KPIS.md``): ``met`` on the good side of the target, ``warning`` inside the warning band,
``missed`` beyond it, ``insufficient_data`` when coverage is below the KPI's threshold or nothing
could be computed: a silent district is never rated good.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from services.storage import events

from . import baseline as baselines
from .catalog import KPIS, Band, Better, Kpi, TargetBasis
from .model import CitySettings, KpiQuery, KpiRow
from .queries import COMPUTATIONS

Conn = psycopg.Connection[TupleRow]

GRAINS = ("hour", "day", "week", "month", "year")
CITY = "city"
# A time series longer than this is a mistake (a year of hours is 8784).
MAX_BUCKETS = 10_000
# Coverage at or above this (and above the KPI's threshold) is "ok"; between the threshold and
# this, "partial": the value is rated, but some sources or readings are missing.
OK_COVERAGE = 0.95
# A TargetBasis.YEAR KPI (SAIFI, SAIDI) over a shorter period is scaled to a year of this many
# days before rating; a period of 365 days or more is rated as it is.
DAYS_PER_YEAR = 365.0
# Values closer than this are the same value for change detection (float noise of re-summing).
_SAME_VALUE_REL = 1e-9


class KpiError(ValueError):
    """Bad input to the engine (the caller's mistake, reported as a 4xx by the API)."""


# The names without an "Error" suffix are the API's contract with this module.
class UnknownKpi(KpiError):  # noqa: N818
    def __init__(self, kpi_id: str, reason: str = "not in the KPI catalog") -> None:
        super().__init__(f"unknown KPI {kpi_id!r}: {reason}")
        self.kpi_id = kpi_id


class InvalidPeriod(KpiError):  # noqa: N818
    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid period: {reason}")
        self.reason = reason


class UnknownDistrict(KpiError):  # noqa: N818
    def __init__(self, district_ids: Sequence[str]) -> None:
        super().__init__(f"unknown district(s): {', '.join(district_ids)}")
        self.district_ids = tuple(district_ids)


class Rating(StrEnum):
    MET = "met"
    WARNING = "warning"
    MISSED = "missed"
    INSUFFICIENT_DATA = "insufficient_data"


class Quality(StrEnum):
    OK = "ok"
    PARTIAL = "partial"
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of what the KPI needs was there: ``ratio`` (0..1) is what the threshold judges:
    completeness when the KPI is built from readings at a nominal interval, else sources used
    over sources expected, and never more than the latter."""

    ratio: float
    completeness: float | None
    sources_used: int
    sources_expected: int
    quality: Quality


@dataclass(frozen=True, slots=True)
class BaselineRef:
    """The recorded baseline and the progress since: ``change`` is signed so that positive means
    better in the KPI's good direction; ``change_pct`` is relative to the baseline value."""

    value: float
    period_start: datetime
    period_end: datetime
    change: float | None
    change_pct: float | None


@dataclass(frozen=True, slots=True)
class KpiValue:
    kpi_id: str
    scope: str  # "city" or a district id
    period_start: datetime
    period_end: datetime
    value: float | None
    unit: str
    rating: Rating
    target: float
    warning: float
    better: Better
    coverage: Coverage
    baseline: BaselineRef | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ISO 8601 times, enums as their values."""
        coverage = self.coverage
        baseline = self.baseline
        return {
            "kpi_id": self.kpi_id,
            "scope": self.scope,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "value": self.value,
            "unit": self.unit,
            "rating": self.rating.value,
            "target": self.target,
            "warning": self.warning,
            "better": self.better.value,
            "coverage": {
                "ratio": coverage.ratio,
                "completeness": coverage.completeness,
                "sources_used": coverage.sources_used,
                "sources_expected": coverage.sources_expected,
                "quality": coverage.quality.value,
            },
            "baseline": None
            if baseline is None
            else {
                "value": baseline.value,
                "period_start": baseline.period_start.isoformat(),
                "period_end": baseline.period_end.isoformat(),
                "change": baseline.change,
                "change_pct": baseline.change_pct,
            },
            "detail": _json_ready(self.detail),
        }


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- periods and buckets -----------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidPeriod(f"unknown timezone {tz!r}") from None


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidPeriod(f"{what} must carry a timezone ({moment.isoformat()})")
    return moment.astimezone(UTC)


def _floor(moment: datetime, grain: str, zone: ZoneInfo) -> datetime:
    """The start of the ``grain`` period (wall clock of ``zone``) containing ``moment``, in UTC."""
    local = moment.astimezone(zone)
    if grain == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
        return start.astimezone(UTC)
    day = local.date()
    if grain == "week":
        day -= timedelta(days=day.weekday())  # ISO 8601 weeks start on Monday
    elif grain == "month":
        day = day.replace(day=1)
    elif grain == "year":
        day = day.replace(month=1, day=1)
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def _next(start: datetime, grain: str, zone: ZoneInfo) -> datetime:
    """The start of the ``grain`` period after the one starting at ``start`` (UTC)."""
    if grain == "hour":
        # Absolute hours: a DST change makes a local hour repeat or vanish, never 2 h long.
        return start + timedelta(hours=1)
    day = start.astimezone(zone).date()
    if grain == "day":
        day += timedelta(days=1)
    elif grain == "week":
        day += timedelta(days=7)
    elif grain == "month":
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    else:
        day = date(day.year + 1, 1, 1)
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def period_bounds(period: str, at: datetime, tz: str = "UTC") -> tuple[datetime, datetime]:
    """The hour, day, week (ISO, from Monday), month or year containing ``at``, on the wall clock
    of ``tz``, as UTC datetimes [start, end)."""
    if period not in GRAINS:
        raise InvalidPeriod(f"period {period!r} is not one of {', '.join(GRAINS)}")
    zone = _zone(tz)
    try:
        start = _floor(_aware(at, "at"), period, zone)
        return start, _next(start, period, zone)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, InvalidPeriod):
            raise
        raise InvalidPeriod(f"the {period} around {at.isoformat()} is out of range") from None


def buckets(
    start: datetime, end: datetime, grain: str | None, tz: str = "UTC"
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at the ``grain`` boundaries of ``tz``'s calendar (None: one bucket); the
    first and last buckets are clipped to the period when it is not aligned."""
    start, end = _aware(start, "start"), _aware(end, "end")
    if end <= start:
        raise InvalidPeriod(f"end {end.isoformat()} is not after start {start.isoformat()}")
    if grain is None:
        return [(start, end)]
    if grain not in GRAINS:
        raise InvalidPeriod(f"grain {grain!r} is not one of {', '.join(GRAINS)}")
    zone = _zone(tz)
    result: list[tuple[datetime, datetime]] = []
    lower = start
    try:
        boundary = _next(_floor(start, grain, zone), grain, zone)
        while lower < end:
            upper = min(boundary, end)
            result.append((lower, upper))
            if len(result) > MAX_BUCKETS:
                raise InvalidPeriod(
                    f"more than {MAX_BUCKETS} {grain} buckets; choose a coarser grain"
                )
            lower, boundary = upper, _next(boundary, grain, zone)
    except (OverflowError, ValueError) as exc:
        # Calendar arithmetic past year 9999 or before year 1: the caller's range, not a bug.
        if isinstance(exc, InvalidPeriod):
            raise
        raise InvalidPeriod(f"{grain} buckets of this range run out of the calendar") from None
    return result


# --- reference data ----------------------------------------------------------------------------


def load_settings(conn: Conn) -> CitySettings:
    """The city settings (table ``city_settings``, one JSON value per name) over the defaults."""
    stored: dict[str, Any] = {
        str(name): value
        for name, value in conn.execute("SELECT name, value FROM city_settings").fetchall()
    }
    defaults = CitySettings()
    peaks = stored.get("peak_periods")
    return CitySettings(
        timezone=str(stored.get("timezone", defaults.timezone)),
        peak_periods=tuple((time.fromisoformat(a), time.fromisoformat(b)) for a, b in peaks)
        if peaks
        else defaults.peak_periods,
        grid_renewable_fraction=float(
            stored.get("grid_renewable_fraction", defaults.grid_renewable_fraction)
        ),
        overflow_threshold=float(stored.get("overflow_threshold", defaults.overflow_threshold)),
        major_road_classes=tuple(stored.get("major_road_classes", defaults.major_road_classes)),
        sustained_outage_s=float(stored.get("sustained_outage_s", defaults.sustained_outage_s)),
    )


def _targets(conn: Conn, kpi_id: str) -> dict[str, Band]:
    rows = conn.execute(
        "SELECT scope, target, warning FROM kpi_targets WHERE kpi_id = %s", (kpi_id,)
    ).fetchall()
    return {str(scope): Band(float(target), float(warning)) for scope, target, warning in rows}


def _districts(conn: Conn, wanted: Sequence[str] | None) -> list[str]:
    known = [str(r[0]) for r in conn.execute("SELECT id FROM districts ORDER BY id").fetchall()]
    if wanted is None:
        return known
    unknown = [d for d in wanted if d not in set(known)]
    if unknown:
        raise UnknownDistrict(unknown)
    return list(dict.fromkeys(wanted))


# --- rating ------------------------------------------------------------------------------------


def _period_days(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 86400.0


def annualise(kpi: Kpi, value: float, period_days: float) -> float:
    """The value the target compares with: a TargetBasis.YEAR value scaled to a year."""
    if kpi.target_basis is TargetBasis.YEAR and period_days < DAYS_PER_YEAR:
        return value * DAYS_PER_YEAR / period_days
    return value


def coverage_of(row: KpiRow, threshold: float) -> Coverage:
    share = row.sources_used / row.sources_expected if row.sources_expected else 0.0
    ratio = share if row.completeness is None else min(share, row.completeness)
    ratio = max(0.0, min(1.0, ratio))
    if ratio < threshold:
        quality = Quality.INSUFFICIENT
    elif ratio < max(threshold, OK_COVERAGE):
        quality = Quality.PARTIAL
    else:
        quality = Quality.OK
    return Coverage(ratio, row.completeness, row.sources_used, row.sources_expected, quality)


def rate(
    value: float | None, coverage: Coverage, band: Band, better: Better, strict: bool
) -> Rating:
    """Rate ``value`` (already annualised where the target is annual) against ``band``."""
    if value is None or coverage.quality is Quality.INSUFFICIENT:
        return Rating.INSUFFICIENT_DATA

    def within(limit: float) -> bool:
        # A value a rounding error away from the limit is on it: sums of float readings put a
        # district at exactly 20 % a few ulps either side, and the rating must not flip on that.
        slack = _SAME_VALUE_REL * max(abs(limit), 1.0)
        if better is Better.LOWER:
            return value < limit - slack if strict else value <= limit + slack
        return value > limit + slack if strict else value >= limit - slack

    if within(band.target):
        return Rating.MET
    if within(band.warning):
        return Rating.WARNING
    return Rating.MISSED


def target_band(kpi: Kpi, scope: str, period_days: float, targets: Mapping[str, Band]) -> Band:
    """The district's override, else the city's, else the catalog's. ``kpi_targets`` holds one
    band per KPI, so an annual value of a KPI with its own annual band (the WHO annual means)
    keeps the catalog's annual band: a 24-hour override says nothing about annual means."""
    if kpi.annual_band is not None and period_days >= DAYS_PER_YEAR:
        return kpi.annual_band
    return targets.get(scope) or targets.get(CITY) or kpi.band


def _progress(
    kpi: Kpi, value: float | None, period_days: float, recorded: baselines.Baseline | None
) -> BaselineRef | None:
    if recorded is None or recorded.value is None:
        return None
    # SAIFI of a month and SAIFI of the baseline year only compare once both are annual rates.
    then = annualise(kpi, recorded.value, _period_days(recorded.period_start, recorded.period_end))
    change = change_pct = None
    if value is not None:
        now = annualise(kpi, value, period_days)
        change = then - now if kpi.better is Better.LOWER else now - then
        change_pct = 100.0 * change / abs(then) if then else None
    return BaselineRef(
        recorded.value, recorded.period_start, recorded.period_end, change, change_pct
    )


def _value_of(
    kpi: Kpi,
    row: KpiRow,
    *,
    scope: str,
    start: datetime,
    end: datetime,
    targets: dict[str, Band],
    recorded: dict[str, baselines.Baseline],
) -> KpiValue:
    days = _period_days(start, end)
    band = target_band(kpi, scope, days, targets)
    coverage = coverage_of(row, kpi.threshold_for(days))
    # A period still running holds only the outages so far: annualise what was observed, or
    # day 3 of a month would be scaled as if it were the whole month, ten times too kind.
    observed_days = _period_days(start, min(end, max(start, datetime.now(UTC))))
    rated = (
        None
        if row.value is None or observed_days <= 0
        else annualise(kpi, row.value, observed_days)
    )
    detail = dict(row.detail)
    if kpi.target_basis is TargetBasis.YEAR and rated is not None:
        detail["annualised_value"] = rated
    return KpiValue(
        kpi_id=kpi.id,
        scope=scope,
        period_start=start,
        period_end=end,
        value=row.value,
        unit=kpi.unit,
        rating=rate(rated, coverage, band, kpi.better, kpi.strict),
        target=band.target,
        warning=band.warning,
        better=kpi.better,
        coverage=coverage,
        baseline=_progress(kpi, row.value, days, recorded.get(scope)),
        detail=detail,
    )


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
    recorded = {b.scope: b for b in baselines.get_baselines(conn, kpi_id)}
    values: list[KpiValue] = []
    for lower, upper in cuts:
        wanted: list[tuple[str, str | None]] = [(d, d) for d in scopes]
        if include_city:
            wanted.append((CITY, None))
        for scope, district_id in wanted:
            # A scope the query returned nothing for has no sensors of the kind: no data.
            row = by_key.get((lower, district_id)) or KpiRow(lower, district_id, None, 0, 0)
            values.append(
                _value_of(
                    kpi,
                    row,
                    scope=scope,
                    start=lower,
                    end=upper,
                    targets=targets,
                    recorded=recorded,
                )
            )
    return values


# --- current values ----------------------------------------------------------------------------

CURRENT_PERIODS = ("day", "month", "year")
_REFRESH_LOCK = 7_210_003  # one refresher at a time (rollups use 7_210_002)


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
        raise InvalidPeriod(f"period {period!r} is not one of {', '.join(GRAINS)}")
    ids = list(kpi_ids) if kpi_ids is not None else None
    rows = conn.execute(
        "SELECT body, computed_at FROM kpi_current WHERE period = %s "
        "AND (%s::text[] IS NULL OR kpi_id = ANY(%s::text[])) "
        "AND (%s::text IS NULL OR scope = %s) ORDER BY kpi_id, scope <> 'city', scope",
        (period, ids, ids, scope, scope),
    ).fetchall()
    return [{**body, "computed_at": computed_at.isoformat()} for body, computed_at in rows]


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=_SAME_VALUE_REL, abs_tol=1e-12)


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
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REFRESH_LOCK,))
        timezone = load_settings(conn).timezone
        stored: dict[tuple[str, str, str], tuple[float | None, str]] = {
            (str(k), str(s), str(p)): (v, str(r))
            for k, s, p, v, r in conn.execute(
                "SELECT kpi_id, scope, period, value, rating FROM kpi_current"
            ).fetchall()
        }
        for period in periods:
            start, end = period_bounds(period, moment, timezone)
            for kpi_id in ids:
                for value in compute(conn, kpi_id, start, end):
                    before = stored.get((kpi_id, value.scope, period))
                    body = value.as_dict()
                    conn.execute(
                        "INSERT INTO kpi_current (kpi_id, scope, period, period_start, "
                        "period_end, value, rating, body, computed_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now()) "
                        "ON CONFLICT (kpi_id, scope, period) DO UPDATE SET "
                        "period_start = excluded.period_start, period_end = excluded.period_end, "
                        "value = excluded.value, rating = excluded.rating, body = excluded.body, "
                        "computed_at = excluded.computed_at",
                        (
                            kpi_id,
                            value.scope,
                            period,
                            start,
                            end,
                            value.value,
                            value.rating.value,
                            Jsonb(body),
                        ),
                    )
                    if (
                        before is not None
                        and _same(before[0], value.value)
                        and before[1] == value.rating.value
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
