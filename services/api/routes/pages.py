"""The built-in pages: the operator console (/console) and the opt-in public city page (/public).

Both are static files of ``services.api.console`` (no build step, nothing from the internet),
whose scripts call the API from the browser. The console asks for an API key and keeps it in
the tab's sessionStorage until "forget key"; the public page needs none and reads only
``/public/kpis``, which this module answers from the monitor's stored KPI values.

Every page and file goes out with a Content-Security-Policy that allows this origin's own files
only (no inline script or style, so an injected string cannot run), and refuses to be framed
(``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), so no other site can overlay the
console's acknowledge button (clickjacking).

The public endpoint is off unless ``URBANPULSE_PUBLIC_PAGE`` is set: then 404, as if it did
not exist. On, it serves per scope (the city, each district) each computed KPI's value, unit,
target, warning threshold, rating, coverage and change since the baseline; a value whose data
is too thin to rate is withheld and the reason said. Never a reading, never a sensor's id or
position; ``URBANPULSE_PUBLIC_SENSOR_COUNTS`` adds how many sensors each district has per
domain, nothing more.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from psycopg.rows import TupleRow

from services.kpi import engine
from services.kpi.catalog import KPIS
from services.settings import Settings

from ..auth import Principal
from ..deps import ReadConn, current_principal
from ..keys import ROLE_PERMISSIONS
from ..problems import Problem

router = APIRouter(include_in_schema=False)

STATIC = "services.api.console"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# This origin's own files only: no inline script or style, no framing, no form posting away.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# The public answer is the same for everyone: computed once per period every PUBLIC_TTL_S, so
# anonymous traffic costs the database one query a minute, not one per visitor.
PUBLIC_TTL_S = 30.0
PublicPeriod = Literal["day", "month", "year"]


@cache
def _file(name: str) -> bytes:
    return files(STATIC).joinpath(name).read_bytes()


@cache
def _served() -> frozenset[str]:
    """The files one may ask for: the package's own, by plain name (no path, so no traversal)."""
    return frozenset(
        entry.name
        for entry in files(STATIC).iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in MEDIA_TYPES)
    )


def _serve(name: str) -> Response:
    if name not in _served():
        raise Problem(404, detail=f"no page file {name!r}")
    media = next(m for ext, m in MEDIA_TYPES.items() if name.endswith(ext))
    return Response(_file(name), media_type=media, headers=SECURITY_HEADERS)


def _public_on(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if not settings.public_page:
        # As if it did not exist: a city that has not opted in publishes nothing, not even that
        # a switch exists.
        raise Problem(404, detail=f"no such page: {request.url.path}")


PublicOn = Annotated[None, Depends(_public_on)]


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console")


@router.get("/live")
async def live() -> RedirectResponse:
    """The former live page's address (printed by older ``urbanpulse up`` runs)."""
    return RedirectResponse("/console")


@router.get("/console")
async def console_page() -> Response:
    return _serve("console.html")


@router.get("/console/static/{name}")
async def console_file(name: str) -> Response:
    return _serve(name)


@router.get("/console/session")
async def console_session(principal: Annotated[Principal, Depends(current_principal)]) -> Any:
    """Who the key stands for and what its role may do, so the console shows only the actions
    the API would accept (the API still checks each one)."""
    return {
        "name": principal.name,
        "key_id": principal.key_id,
        "role": principal.role,
        "permissions": sorted(ROLE_PERMISSIONS.get(principal.role, ())),
    }


@router.get("/public")
async def public_page(_: PublicOn) -> Response:
    return _serve("public.html")


class _PublicCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, bool], tuple[float, dict[str, Any]]] = {}

    def get(self, key: tuple[str, bool], compute: Any) -> dict[str, Any]:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and time.monotonic() - hit[0] < PUBLIC_TTL_S:
                return hit[1]
        answer: dict[str, Any] = compute()
        with self._lock:
            self._entries[key] = (time.monotonic(), answer)
        return answer


def _public_cache(request: Request) -> _PublicCache:
    state = request.app.state
    if not hasattr(state, "public_cache"):
        state.public_cache = _PublicCache()
    found: _PublicCache = state.public_cache
    return found


@router.get("/public/kpis")
def public_kpis(
    _: PublicOn,
    request: Request,
    conn: ReadConn,
    period: Annotated[PublicPeriod, Query()] = "month",
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    with_counts = settings.public_sensor_counts
    body = _public_cache(request).get(
        (period, with_counts), lambda: public_summary(conn, period, sensor_counts=with_counts)
    )
    return JSONResponse(
        body,
        headers={
            "Cache-Control": f"public, max-age={int(PUBLIC_TTL_S)}",
            "X-Content-Type-Options": "nosniff",
        },
    )


def public_summary(
    conn: psycopg.Connection[TupleRow], period: str, *, sensor_counts: bool
) -> dict[str, Any]:
    """What the public page shows: the stored current values, reduced to what may be public."""
    rows = engine.current(conn, period=period)
    districts = conn.execute("SELECT id, name FROM districts ORDER BY id").fetchall()
    counts: dict[str, dict[str, int]] = {}
    if sensor_counts:
        for district_id, domain, count in conn.execute(
            "SELECT district_id, domain, count(*) FROM sensors WHERE status <> 'retired' "
            "AND district_id IS NOT NULL GROUP BY district_id, domain ORDER BY 1, 2"
        ).fetchall():
            counts.setdefault(str(district_id), {})[str(domain)] = int(count)
    by_scope: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kpi_id"] in KPIS:
            by_scope.setdefault(row["scope"], []).append(public_value(row))
    scopes: list[dict[str, Any]] = [
        {"id": engine.CITY, "name": "The whole city", "values": by_scope.get(engine.CITY, [])}
    ]
    for district_id, name in districts:
        scope: dict[str, Any] = {
            "id": district_id,
            "name": name,
            "values": by_scope.get(str(district_id), []),
        }
        if sensor_counts:
            scope["sensors"] = counts.get(str(district_id), {})
        scopes.append(scope)
    shown = sorted({v["kpi_id"] for values in by_scope.values() for v in values})
    computed = [str(r["computed_at"]) for r in rows]
    return {
        "period": period,
        "period_start": rows[0]["period_start"] if rows else None,
        "period_end": rows[0]["period_end"] if rows else None,
        "computed_at": max(computed) if computed else None,
        "kpis": [_public_kpi(KPIS[kpi_id]) for kpi_id in shown],
        "scopes": scopes,
    }


def _public_kpi(kpi: Any) -> dict[str, Any]:
    return {
        "id": kpi.id,
        "name": kpi.name,
        "domain": kpi.domain.value,
        "unit": kpi.unit,
        "better": kpi.better.value,
        "definition": kpi.definition,
        "follows": kpi.follows,
    }


def public_value(row: dict[str, Any]) -> dict[str, Any]:
    """One stored KPI value as the public sees it: no ``detail`` (which may name sensors), no
    value when the data is too thin to rate it, and the baseline change as a trend."""
    kpi = KPIS[row["kpi_id"]]
    coverage = row.get("coverage") or {}
    start = datetime.fromisoformat(row["period_start"])
    end = datetime.fromisoformat(row["period_end"])
    needed = kpi.threshold_for((end - start).total_seconds() / 86400)
    rated = row["rating"] != "insufficient_data" and row.get("value") is not None
    ratio = float(coverage.get("ratio") or 0.0)
    baseline = row.get("baseline") or None
    trend = None
    if rated and baseline is not None and baseline.get("change") is not None:
        change = float(baseline["change"])
        trend = {
            "direction": "better" if change > 0 else "worse" if change < 0 else "unchanged",
            "change_pct": baseline.get("change_pct"),
            "baseline_value": baseline.get("value"),
            "baseline_period_start": baseline.get("period_start"),
        }
    return {
        "kpi_id": kpi.id,
        "value": row["value"] if rated else None,
        "unit": row["unit"],
        "rating": row["rating"],
        "target": row["target"],
        "warning": row["warning"],
        "better": row["better"],
        "coverage": {"ratio": ratio, "needed": needed, "quality": coverage.get("quality")},
        "trend": trend,
        "note": None
        if rated
        else (
            f"Not enough data to rate: {100 * ratio:.0f} % of the expected data arrived, "
            f"{100 * needed:.0f} % is needed."
        ),
    }
