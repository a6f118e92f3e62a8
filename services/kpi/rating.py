"""Rating a KPI value: coverage, the target band in force, annualising, progress since the
baseline, and the rated value the engine returns (:class:`KpiValue`, with its JSON form). Pure:
values in, values out; the engine (``engine.py``) brings the rows, targets and baselines.

``KPIS.md``: ``met`` on the good side of the target, ``warning`` inside the warning band,
``missed`` beyond it, ``insufficient_data`` when coverage is below the KPI's threshold or nothing
could be computed: a silent district is never rated good.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from services.storage.kpi_targets import CITY, Baseline

from .catalog import Band, Better, Kpi, TargetBasis
from .errors import InvalidTarget
from .model import KpiRow

# Coverage at or above this (and above the KPI's threshold) is "ok"; between the threshold and
# this, "partial": the value is rated, but some sources or readings are missing.
OK_COVERAGE = 0.95
# A TargetBasis.YEAR KPI (SAIFI, SAIDI) over a shorter period is scaled to a year of this many
# days before rating; a period of 365 days or more is rated as it is.
DAYS_PER_YEAR = 365.0
# Values closer than this are the same value for change detection (float noise of re-summing).
SAME_VALUE_REL = 1e-9


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


def period_days(start: datetime, end: datetime) -> float:
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
        slack = SAME_VALUE_REL * max(abs(limit), 1.0)
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


def checked_band(kpi: Kpi, target: float, warning: float) -> Band:
    """The band ``target`` / ``warning`` for ``kpi``, whose warning limit must lie on the bad
    side of its target (else there is no warning band); InvalidTarget when it does not."""
    bad_side = warning >= target if kpi.better is Better.LOWER else warning <= target
    if not bad_side:
        raise InvalidTarget(
            kpi.id,
            f"{kpi.id} is better {kpi.better.value}: the warning limit must lie on the bad "
            f"side of the target",
        )
    return Band(target, warning)


def same_value(a: float | None, b: float | None) -> bool:
    """Whether two values are the same for change detection (float noise aside)."""
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=SAME_VALUE_REL, abs_tol=1e-12)


def progress(
    kpi: Kpi, value: float | None, days: float, recorded: Baseline | None
) -> BaselineRef | None:
    """The progress of ``value`` (over ``days``) since the ``recorded`` baseline."""
    if recorded is None or recorded.value is None:
        return None
    # SAIFI of a month and SAIFI of the baseline year only compare once both are annual rates.
    then = annualise(kpi, recorded.value, period_days(recorded.period_start, recorded.period_end))
    change = change_pct = None
    if value is not None:
        now = annualise(kpi, value, days)
        change = then - now if kpi.better is Better.LOWER else now - then
        change_pct = 100.0 * change / abs(then) if then else None
    return BaselineRef(
        recorded.value, recorded.period_start, recorded.period_end, change, change_pct
    )


def value_of(
    kpi: Kpi,
    row: KpiRow,
    *,
    scope: str,
    start: datetime,
    end: datetime,
    now: datetime,
    targets: Mapping[str, Band],
    recorded: Mapping[str, Baseline],
) -> KpiValue:
    """The rated value of one raw row of ``kpi`` for ``scope`` over [start, end), as of ``now``."""
    days = period_days(start, end)
    band = target_band(kpi, scope, days, targets)
    coverage = coverage_of(row, kpi.threshold_for(days))
    # A period still running holds only the outages so far: annualise what was observed, or
    # day 3 of a month would be scaled as if it were the whole month, ten times too kind.
    observed_days = period_days(start, min(end, max(start, now)))
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
        baseline=progress(kpi, row.value, days, recorded.get(scope)),
        detail=detail,
    )
