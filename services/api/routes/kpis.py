"""/v1/kpis: the KPI catalog, values per district and city with attainment and coverage, time
series, and baselines with progress.

Reads stay cheap two ways. The current day, month and year come from ``kpi_current``, which the
monitor recomputes every minute (``computed_at`` says when). Any other period is computed in the
database over the rollups and kept in a small in-process cache for :data:`CACHE_TTL_S` seconds, so
a dashboard's refreshes do not recompute it; the response's ``computed_at`` and the
``Cache-Control`` header state that freshness bound.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Path, Query, Request, Response
from psycopg.rows import TupleRow
from pydantic import AwareDatetime, BaseModel, Field

from services.kpi import baseline as baselines
from services.kpi import engine
from services.kpi.catalog import KPIS, Kpi
from services.settings import Settings

from ..deps import ReadConn, Reader, statement_timeout_ms, with_connection
from ..problems import Problem, invalid, limit_refused, responses, span_text

router = APIRouter(tags=["kpis"])

CACHE_TTL_S = 60.0
CACHE_ENTRIES = 512

Period = Literal["hour", "day", "week", "month", "year"]
KpiId = Annotated[str, Path(description="a KPI id of the catalog", examples=["AIR-1"])]
Districts = Annotated[
    list[str] | None, Query(alias="district", description="district ids (repeatable)")
]


class BandModel(BaseModel):
    target: float
    warning: float


class CatalogEntry(BaseModel):
    id: str = Field(examples=["WAT-1"])
    name: str = Field(examples=["Non-revenue water"])
    domain: str = Field(examples=["water"])
    dimension: str = Field(examples=["D6.1"])
    subdimension: str
    follows: str
    definition: str
    unit: str = Field(examples=["%"])
    better: Literal["lower", "higher"]
    band: BandModel = Field(description="the catalog's default target and warning band")
    annual_band: BandModel | None = None
    target_source: str = Field(examples=["standard", "ours"])
    target_basis: Literal["period", "year"]
    coverage_threshold: float | None = Field(
        description="null: 0.75 up to a month, 0.90 for a year (EU 2008/50/EC data capture)"
    )
    computed: bool = Field(description="false while the KPI has no computation yet")


class CoverageModel(BaseModel):
    ratio: float = Field(description="what the threshold judges, 0..1", examples=[0.97])
    completeness: float | None = Field(description="valid ÷ expected readings, 0..1")
    sources_used: int
    sources_expected: int
    quality: Literal["ok", "partial", "insufficient"]


class BaselineRefModel(BaseModel):
    value: float
    period_start: datetime
    period_end: datetime
    change: float | None = Field(description="signed: positive means better")
    change_pct: float | None


class KpiValueModel(BaseModel):
    kpi_id: str = Field(examples=["AIR-1"])
    scope: str = Field(description="city or a district id", examples=["city"])
    period_start: datetime
    period_end: datetime
    value: float | None = Field(examples=[11.4])
    unit: str = Field(examples=["ug/m3"])
    rating: Literal["met", "warning", "missed", "insufficient_data"]
    target: float
    warning: float
    better: Literal["lower", "higher"]
    coverage: CoverageModel
    baseline: BaselineRefModel | None
    detail: dict[str, Any]


class KpiValues(BaseModel):
    kpi_id: str
    period_start: datetime
    period_end: datetime
    grain: Period | None = Field(description="null: one value per scope for the whole period")
    computed_at: datetime = Field(description="when these values were computed")
    values: list[KpiValueModel]


class CurrentValues(BaseModel):
    period: Period
    values: list[dict[str, Any]] = Field(
        description="KpiValue bodies with computed_at, as of the monitor's last refresh"
    )


class BaselineModel(BaseModel):
    kpi_id: str
    scope: str
    period_start: datetime
    period_end: datetime
    value: float | None
    coverage: float | None
    quality: str
    recorded_at: datetime
    recorded_by: str | None


def _entry(kpi: Kpi) -> CatalogEntry:
    annual = kpi.annual_band
    return CatalogEntry(
        id=kpi.id,
        name=kpi.name,
        domain=kpi.domain.value,
        dimension=kpi.dimension,
        subdimension=kpi.subdimension,
        follows=kpi.follows,
        definition=kpi.definition,
        unit=kpi.unit,
        better=kpi.better.value,
        band=BandModel(target=kpi.band.target, warning=kpi.band.warning),
        annual_band=None
        if annual is None
        else BandModel(target=annual.target, warning=annual.warning),
        target_source=kpi.target_source,
        target_basis=kpi.target_basis.value,
        coverage_threshold=kpi.coverage_threshold,
        computed=kpi.id in engine.computed_kpis(),
    )


def _kpi(kpi_id: str) -> Kpi:
    kpi = KPIS.get(kpi_id)
    if kpi is None:
        raise Problem(404, detail=f"no KPI {kpi_id!r}; the catalog has {', '.join(KPIS)}")
    return kpi


class _Cache:
    """A small LRU of computed answers, each good for ``CACHE_TTL_S`` seconds. One thread
    computes a missing answer while the others asking the same question wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, KpiValues]] = OrderedDict()
        self._computing: dict[tuple[Any, ...], threading.Lock] = {}

    def fresh(self, key: tuple[Any, ...]) -> KpiValues | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or time.monotonic() - hit[0] >= CACHE_TTL_S:
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def get_or_compute(self, key: tuple[Any, ...], compute: Callable[[], KpiValues]) -> KpiValues:
        answer = self.fresh(key)
        if answer is not None:
            return answer
        with self._lock:
            flight = self._computing.setdefault(key, threading.Lock())
        try:
            with flight:
                answer = self.fresh(key)
                if answer is None:
                    computed_at = time.monotonic()
                    answer = compute()
                    with self._lock:
                        self._entries[key] = (computed_at, answer)
                        self._entries.move_to_end(key)
                        while len(self._entries) > CACHE_ENTRIES:
                            self._entries.popitem(last=False)
        finally:
            with self._lock:
                self._computing.pop(key, None)
        return answer


def _cache_of(request: Request) -> _Cache:
    """The app's cache (one per app, so two apps on two databases never share answers)."""
    state = request.app.state
    if not hasattr(state, "kpi_cache"):
        state.kpi_cache = _Cache()
    cache: _Cache = state.kpi_cache
    return cache


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
    try:
        lower, upper = engine.period_bounds(period, at or datetime.now(UTC), timezone)
    except engine.InvalidPeriod as exc:
        raise invalid("query.at", str(exc)) from None
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
        try:
            values = engine.compute(
                conn,
                kpi.id,
                start,
                end,
                grain=grain,
                districts=districts,
                include_city=include_city,
            )
        except engine.UnknownDistrict as exc:
            raise invalid("query.district", str(exc)) from None
        except engine.InvalidPeriod as exc:
            raise invalid("query.grain" if grain else "query.end", str(exc)) from None
        except engine.UnknownKpi as exc:
            raise Problem(404, detail=str(exc)) from None
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


def _cache_headers(response: Response) -> None:
    response.headers["Cache-Control"] = f"private, max-age={int(CACHE_TTL_S)}"


@router.get("/kpis", response_model=list[CatalogEntry], responses=responses(401, 403))
async def catalog(_: Reader) -> list[CatalogEntry]:
    """The KPI catalog: definitions, units, standards followed, default targets and bands."""
    return [_entry(k) for k in KPIS.values()]


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
    return _entry(_kpi(kpi_id))


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
    _cache_headers(response)
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
    _cache_headers(response)
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
    response_model=list[BaselineModel],
    responses=responses(401, 403, 404),
)
def kpi_baseline(conn: ReadConn, _: Reader, kpi_id: KpiId) -> list[BaselineModel]:
    """The recorded baseline of the KPI for the city and each district (``urbanpulse kpi
    baseline set`` records it); every value served also reports its change against it."""
    _kpi(kpi_id)
    return [
        BaselineModel.model_validate(b.as_dict()) for b in baselines.get_baselines(conn, kpi_id)
    ]
