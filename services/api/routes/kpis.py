"""/v1/kpis: the KPI catalog, values per district and city with attainment and coverage, time
series, and baselines with progress.

Reads stay cheap two ways. The current day, month and year come from ``kpi_current``, which the
monitor recomputes every minute (``computed_at`` says when). Any other period is computed in the
database over the rollups and kept in the app's cache (``services.api.kpi_cache``) for
``URBANPULSE_API_KPI_CACHE_TTL`` (a minute), so a dashboard's refreshes do not recompute it; the
response's ``computed_at`` and the ``Cache-Control`` header state that freshness bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Path, Query, Request, Response
from psycopg.rows import TupleRow
from pydantic import AwareDatetime

from services.kpi import baseline as baselines
from services.kpi import engine
from services.kpi.catalog import KPIS, Kpi
from services.settings import Settings

from ..deps import ReadConn, Reader, statement_timeout_ms, with_connection
from ..kpi_cache import AnswerCache, cache_of
from ..kpi_models import (
    CatalogEntry,
    CurrentValues,
    KpiValueModel,
    KpiValues,
    Period,
    entry_of,
)
from ..problems import Problem, invalid, limit_refused, responses, span_text

router = APIRouter(tags=["kpis"])

KpiId = Annotated[str, Path(description="a KPI id of the catalog", examples=["AIR-1"])]
Districts = Annotated[
    list[str] | None, Query(alias="district", description="district ids (repeatable)")
]


def _kpi(kpi_id: str) -> Kpi:
    kpi = KPIS.get(kpi_id)
    if kpi is None:
        raise Problem(404, detail=f"no KPI {kpi_id!r}; the catalog has {', '.join(KPIS)}")
    return kpi


def _cache_of(request: Request) -> AnswerCache[KpiValues]:
    return cache_of(request)


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    if start is None or end is None:
        raise invalid("query.start" if start is None else "query.end", "start and end go together")
    if end <= start:
        raise invalid("query.end", "must be after start")
    return start, end


# Where each grain's buckets are counted from on UTC's calendar: hours and days from the epoch,
# weeks (ISO, from Monday) from the first Monday after it.
_GRAIN_ORIGIN = {
    "hour": (datetime(1970, 1, 1, tzinfo=UTC), timedelta(hours=1)),
    "day": (datetime(1970, 1, 1, tzinfo=UTC), timedelta(days=1)),
    "week": (datetime(1970, 1, 5, tzinfo=UTC), timedelta(days=7)),
}


def series_length(start: datetime, end: datetime, grain: str) -> int | None:
    """The buckets of a ``grain`` series over [start, end) on UTC's calendar (what
    ``engine.buckets(start, end, grain, "UTC")`` makes), counted without making them: the
    engine makes them once, for the city's calendar. None: off the calendar."""
    try:
        first, last = start.astimezone(UTC), (end - timedelta(microseconds=1)).astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    if grain == "year":
        return last.year - first.year + 1
    if grain == "month":
        return (last.year - first.year) * 12 + last.month - first.month + 1
    origin, width = _GRAIN_ORIGIN[grain]
    return (last - origin) // width - (first - origin) // width + 1


def check_bounds(settings: Settings, start: datetime, end: datetime, grain: str | None) -> None:
    """Refuse, before any query or cached answer, a range or a series larger than the settings
    allow."""
    limit = settings.api_kpi_max_span
    if end - start > limit:
        raise limit_refused(
            "query.start",
            f"a KPI covers at most {span_text(limit)} (URBANPULSE_API_KPI_MAX_SPAN); this range "
            f"covers {span_text(end - start)}: narrow it",
            "URBANPULSE_API_KPI_MAX_SPAN",
            seconds=limit.total_seconds(),
        )
    if grain is None:
        return
    most = settings.api_kpi_max_buckets
    # Counted on UTC's calendar: the city's differs by at most the one bucket a shift moves.
    count = series_length(start, end, grain)
    if count is None or count > most:
        raise limit_refused(
            "query.grain",
            f"a series has at most {most} buckets (URBANPULSE_API_KPI_MAX_BUCKETS); this one "
            f"has {'more' if count is None else count}: choose a coarser grain or narrow the range",
            "URBANPULSE_API_KPI_MAX_BUCKETS",
            buckets=most,
        )


def _period_in_city(
    conn: psycopg.Connection[TupleRow],
    kpi: Kpi,
    *,
    period: str,
    at: datetime | None,
    districts: Sequence[str] | None,
    include_city: bool,
) -> tuple[datetime, datetime, KpiValues | None]:
    """The period on the city's calendar (its timezone), and the monitor's stored values when
    the period asked for is a current one it keeps."""
    timezone = engine.load_settings(conn).timezone
    lower, upper = engine.period_bounds(period, at or datetime.now(UTC), timezone)
    stored = None
    if at is None and period in engine.CURRENT_PERIODS:
        stored = _stored_current(
            conn,
            kpi,
            period=period,
            start=lower,
            districts=districts,
            include_city=include_city,
        )
    return lower, upper, stored


async def _values(
    request: Request,
    kpi: Kpi,
    *,
    start: datetime,
    end: datetime,
    grain: Period | None,
    districts: Sequence[str] | None,
    include_city: bool,
) -> KpiValues:
    """The answer from the cache, on the event loop; or computed once in a thread."""
    settings: Settings = request.app.state.settings
    check_bounds(settings, start, end, grain)
    timeout_ms = statement_timeout_ms(settings.api_statement_timeout_kpis)
    cache = _cache_of(request)
    key = (kpi.id, start, end, grain, tuple(sorted(districts)) if districts else None, include_city)
    hit = cache.fresh(key)
    if hit is not None:
        return hit

    def compute(conn: psycopg.Connection[TupleRow]) -> KpiValues:
        # For this transaction only: the pooled connection keeps the default of other requests.
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))
        values = engine.compute(
            conn,
            kpi.id,
            start,
            end,
            grain=grain,
            districts=districts,
            include_city=include_city,
        )
        return KpiValues(
            kpi_id=kpi.id,
            period_start=start,
            period_end=end,
            grain=grain,
            computed_at=datetime.now(UTC),
            values=[KpiValueModel.model_validate(v.as_dict()) for v in values],
        )

    return await with_connection(
        request, lambda conn: cache.get_or_compute(key, lambda: compute(conn)), replica=True
    )


def _stored_current(
    conn: psycopg.Connection[TupleRow],
    kpi: Kpi,
    *,
    period: str,
    start: datetime,
    districts: Sequence[str] | None,
    include_city: bool,
) -> KpiValues | None:
    """The monitor's values of the current period, when it has computed this very period."""
    rows = engine.current(conn, kpi_ids=[kpi.id], period=period)
    if not rows or any(datetime.fromisoformat(r["period_start"]) != start for r in rows):
        return None
    wanted = set(districts) if districts else None
    if wanted is not None:
        missing = wanted - {r["scope"] for r in rows}
        if missing:
            return None  # an unknown district, or one added since: compute (and say why)
    chosen = [
        r
        for r in rows
        if (r["scope"] == engine.CITY and include_city)
        or (r["scope"] != engine.CITY and (wanted is None or r["scope"] in wanted))
    ]
    return KpiValues(
        kpi_id=kpi.id,
        period_start=start,
        period_end=datetime.fromisoformat(rows[0]["period_end"]),
        grain=None,
        computed_at=min(datetime.fromisoformat(r["computed_at"]) for r in rows),
        values=[KpiValueModel.model_validate(r) for r in chosen],
    )


def _cache_headers(request: Request, response: Response) -> None:
    response.headers["Cache-Control"] = f"private, max-age={int(_cache_of(request).ttl_s)}"


@router.get("/kpis", response_model=list[CatalogEntry], responses=responses(401, 403))
async def catalog(_: Reader) -> list[CatalogEntry]:
    """The KPI catalog: definitions, units, standards followed, default targets and bands."""
    return [entry_of(k) for k in KPIS.values()]


@router.get("/kpis/current", response_model=CurrentValues, responses=responses(401, 403, 404, 422))
def current_values(
    conn: ReadConn,
    _: Reader,
    period: Annotated[Literal["day", "month", "year"], Query()] = "day",
    scope: Annotated[
        str | None, Query(description="city or a district id; all when absent")
    ] = None,
    kpi: Annotated[
        list[str] | None, Query(description="KPI ids (repeatable); all when absent")
    ] = None,
) -> CurrentValues:
    """Every KPI's value for the current day, month or year, per district and for the city, as
    the monitor last computed it (``computed_at``; about a minute old at most)."""
    for kpi_id in kpi or ():
        _kpi(kpi_id)
    return CurrentValues(
        period=period, values=engine.current(conn, kpi_ids=kpi, scope=scope, period=period)
    )


@router.get("/kpis/{kpi_id}", response_model=CatalogEntry, responses=responses(401, 403, 404))
async def catalog_entry(_: Reader, kpi_id: KpiId) -> CatalogEntry:
    """One KPI of the catalog."""
    return entry_of(_kpi(kpi_id))


@router.get(
    "/kpis/{kpi_id}/values",
    response_model=KpiValues,
    responses=responses(401, 403, 404, 422),
)
async def kpi_values(
    _: Reader,
    request: Request,
    response: Response,
    kpi_id: KpiId,
    *,
    period: Annotated[Period | None, Query(description="the period containing `at`")] = None,
    at: Annotated[AwareDatetime | None, Query(description="default: now")] = None,
    start: Annotated[AwareDatetime | None, Query(description="instead of period: from")] = None,
    end: Annotated[AwareDatetime | None, Query(description="...to (exclusive)")] = None,
    district: Districts = None,
    city: Annotated[bool, Query(description="include the whole city's value")] = True,
) -> KpiValues:
    """The KPI over one period (default: this month) for each district (or those asked for) and
    the city: value, rating against its target (met, warning, missed, insufficient_data),
    coverage, and the baseline with the change since."""
    kpi = _kpi(kpi_id)
    _cache_headers(request, response)
    if start is not None or end is not None:
        if period is not None or at is not None:
            raise invalid("query.start", "give either period (and at) or start and end, not both")
        lower, upper = _range(start, end)
    else:
        lower, upper, stored = await with_connection(
            request,
            read_only=True,
            work=lambda conn: _period_in_city(
                conn,
                kpi,
                period=period or "month",
                at=at,
                districts=district,
                include_city=city,
            ),
        )
        if stored is not None:
            return stored
    return await _values(
        request,
        kpi,
        start=lower,
        end=upper,
        grain=None,
        districts=district,
        include_city=city,
    )


@router.get(
    "/kpis/{kpi_id}/series",
    response_model=KpiValues,
    responses=responses(401, 403, 404, 422),
)
async def kpi_series(
    _: Reader,
    request: Request,
    response: Response,
    kpi_id: KpiId,
    *,
    start: Annotated[AwareDatetime, Query(description="from")],
    end: Annotated[AwareDatetime, Query(description="to (exclusive)")],
    grain: Annotated[Period, Query(description="one value per bucket of this size")] = "day",
    district: Districts = None,
    city: Annotated[bool, Query(description="include the whole city's series")] = True,
) -> KpiValues:
    """The KPI as a time series at ``grain`` (hour to year), per district asked for and the city."""
    kpi = _kpi(kpi_id)
    _range(start, end)
    _cache_headers(request, response)
    return await _values(
        request,
        kpi,
        start=start,
        end=end,
        grain=grain,
        districts=district or [],
        include_city=city,
    )


@router.get(
    "/kpis/{kpi_id}/baseline",
    # The engine's own type: FastAPI shows a dataclass as it shows a model.
    response_model=list[baselines.Baseline],
    responses=responses(401, 403, 404),
)
def kpi_baseline(conn: ReadConn, _: Reader, kpi_id: KpiId) -> list[baselines.Baseline]:
    """The recorded baseline of the KPI for the city and each district (``urbanpulse kpi
    baseline set`` records it); every value served also reports its change against it."""
    _kpi(kpi_id)
    return baselines.get_baselines(conn, kpi_id)
