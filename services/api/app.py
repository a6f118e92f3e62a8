"""The FastAPI application: ``create_app(settings)``, everything under ``/v1`` but operations.

Nothing connects at import time: the connection pool is made in the lifespan, from the settings
passed in (or loaded from the environment), so tests build as many apps as they like.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from services.readreplica.routing import ReplicaGate
from services.settings import ApiSettings, Settings, load_settings
from services.storage.urls import libpq_url

from . import docs, kpi_cache, problems
from .auth import Authenticator
from .deps import KEY_CHECKS_AT_ONCE, Replica, current_principal, statement_timeout_ms
from .guards import BodyLimitMiddleware, FailureLimiter
from .metrics import ApiMetrics, MetricsMiddleware
from .routes import (
    alerts,
    bulk,
    dataio,
    health,
    kpi_settings,
    kpis,
    notifications,
    pages,
    quarantine,
    readings,
    registry,
    retention,
    stream,
)
from .routes.ngsi import router as ngsi_router

DESCRIPTION = """
UrbanPulse serves a smart sustainable city's sensor data: the registry of districts, gateways
and sensors; readings, downsampled from rollups; KPIs and their targets; alerts; and a live
stream.

**Auth.** Every `/v1` endpoint needs an API key, sent as `X-API-Key: <id>.<secret>` (or
`Authorization: Bearer <id>.<secret>`). Roles: *operator* (read, stream, alerts:write),
*engineer* (operator + registry:write), *service* (read, stream), *admin* (everything). Keys
are made with `urbanpulse keys create`.

**Errors** are RFC 9457 problem details (`application/problem+json`); validation problems list
each bad field in `errors`.

**Limits.** A request body larger than its route allows is refused with 413 while it streams
in (`URBANPULSE_API_MAX_BODY_BYTES`, 256 KiB; `URBANPULSE_API_MAX_BODY_BYTES_BULK`, 10 MiB, for
`/v1/registry/bulk`); a `/v1` request with a body has its key checked before any of the body is
read. After `URBANPULSE_API_AUTH_FAILURES_MAX` (10) failed key checks within
`URBANPULSE_API_AUTH_FAILURES_WINDOW` (a minute) from one address or for one key id, further
attempts get 429 with `Retry-After` until the window has passed. The live stream's own limits
are described on `/v1/stream`.

**Pagination.** Lists return `{items, next_cursor}`; pass `cursor=<next_cursor>` for the next
page until it is null.
"""

TAGS = [
    {"name": "registry", "description": "Districts, gateways and sensors (engineers write)."},
    {"name": "readings", "description": "A sensor's readings over a time range, downsampled."},
    {"name": "quarantine", "description": "Input that could not be stored, for inspection."},
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics."},
]


def async_pool_for(settings: Settings, *, replica: bool = False) -> AsyncConnectionPool:
    """Connections for the hottest read paths, which run on the event loop: no thread hop, no
    contention for the GIL between the loop and the threads (bench/bench_api.py measured the
    readings endpoint's p95 halved). ``replica``: to ``URBANPULSE_DATABASE_READ_URL``."""
    url, tuning = _url(settings, replica=replica), ApiSettings.of(settings)
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=tuning.request_slots,
        timeout=tuning.pool_timeout_s,
        open=False,
        name="urbanpulse-api-async" + ("-read" if replica else ""),
        # This pool serves only the readings endpoint: its statement timeout is that class's.
        kwargs={
            "application_name": _application_name(replica),
            "autocommit": True,
            "options": _timeout_option(settings.api_statement_timeout_readings),
        },
    )


def pool_for(settings: Settings, *, replica: bool = False) -> ConnectionPool:
    url, tuning = _url(settings, replica=replica), ApiSettings.of(settings)
    return ConnectionPool(
        libpq_url(url),
        min_size=tuning.pool_min,
        max_size=tuning.pool_max,
        timeout=tuning.pool_timeout_s,
        # Do not wait for the first connections: the API starts (and /readyz says why it is
        # not ready) while the database is still coming up.
        open=False,
        name="urbanpulse-api" + ("-read" if replica else ""),
        # KPI computations raise it for their transaction (routes/kpis.py); the rest keep this.
        kwargs={
            "application_name": _application_name(replica),
            "options": _timeout_option(settings.api_statement_timeout_other),
        },
    )


def _url(settings: Settings, *, replica: bool) -> str:
    url = settings.database_read_url if replica else settings.database_url
    if not url:
        name = "DATABASE_READ_URL" if replica else "DATABASE_URL"
        raise ValueError(f"the API needs a database: set URBANPULSE_{name}")
    return url


def _application_name(replica: bool) -> str:
    # Names the replica's sessions in pg_stat_activity, so an operator sees which API reads
    # land where.
    return "urbanpulse-api-read" if replica else "urbanpulse-api"


def _timeout_option(timeout: timedelta) -> str:
    return f"-c statement_timeout={statement_timeout_ms(timeout)}"


def statement_timeout_of(path: str, settings: Settings) -> tuple[str, timedelta]:
    """The request class of ``path`` (the setting's suffix) and its statement timeout."""
    if path.startswith("/v1/kpis/") and path.endswith(("/values", "/series")):
        return "KPIS", settings.api_statement_timeout_kpis
    if path.startswith("/v1/sensors/") and path.endswith("/readings"):
        return "READINGS", settings.api_statement_timeout_readings
    return "OTHER", settings.api_statement_timeout_other


async def _on_database_down(request: Request, exc: Exception) -> JSONResponse:
    problem = problems.Problem(503, "Database unavailable", "the database did not answer in time")
    return problems.problem_response(problem, request)


async def _on_statement_timeout(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL stopped the statement at its timeout: the database is up, the question was too
    # big. Say which limit, and what to ask instead.
    name, timeout = statement_timeout_of(request.url.path, request.app.state.settings)
    setting = f"URBANPULSE_API_STATEMENT_TIMEOUT_{name}"
    seconds = timeout.total_seconds()
    problem = problems.Problem(
        504,
        "Query timed out",
        f"the query ran past the statement timeout of {seconds:g} s ({setting}) and was "
        "stopped; narrow the range (or choose a coarser grain or resolution) and ask again",
        limit={"setting": setting, "seconds": seconds},
    )
    return problems.problem_response(problem, request)


async def _on_refused_by_database(request: Request, exc: Exception) -> JSONResponse:
    # The last line behind the models' own checks: a value PostgreSQL refuses (out of an
    # integer's range, a NUL in text, a constraint) is the sender's error, never a 500.
    # PostgreSQL's primary message names the problem, not our internals.
    assert isinstance(exc, psycopg.Error)
    message = exc.diag.message_primary or type(exc).__name__
    if isinstance(exc, psycopg.errors.UniqueViolation):
        problem = problems.Problem(409, detail=f"conflicts with the registry: {message}")
    else:
        problem = problems.invalid_all([("body", message)], f"refused by the database: {message}")
    return problems.problem_response(problem, request)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment)."""
    settings = settings or load_settings()
    pool = pool_for(settings)

    async_pool = async_pool_for(settings)
    replica = (
        Replica(
            pool_for(settings, replica=True),
            async_pool_for(settings, replica=True),
            ReplicaGate(settings.database_read_url, settings.database_read_max_lag.total_seconds()),
        )
        if settings.database_read_url
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        await async_pool.open(wait=False)
        if replica is not None:
            replica.pool.open(wait=False)
            await replica.async_pool.open(wait=False)
            replica.gate.start()
        try:
            yield
        finally:
            if replica is not None:
                replica.gate.stop()
                await replica.async_pool.close()
                replica.pool.close()
            await async_pool.close()
            pool.close()

    app = FastAPI(
        title="UrbanPulse API",
        summary="Registry, readings, KPIs, alerts and live data of a smart sustainable city.",
        description=DESCRIPTION,
        version="1.0.0",
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Any route may fail unexpectedly or find the database gone; say so in every operation.
        responses=problems.responses(413, 429, 500, 503, 504),
        docs_url=None,  # served from the package by docs.install, not from a CDN
        redoc_url=None,
    )
    docs.install(app)
    app.state.settings = settings
    app.state.pool = pool
    app.state.async_pool = async_pool
    app.state.replica = replica
    app.state.connection_slots = asyncio.Semaphore(ApiSettings.of(settings).request_slots)
    app.state.kpi_cache = kpi_cache.for_settings(settings)
    app.state.authenticator = Authenticator(pool)
    app.state.auth_failures = FailureLimiter(
        settings.api_auth_failures_max, settings.api_auth_failures_window.total_seconds()
    )
    app.state.key_checks = asyncio.Semaphore(KEY_CHECKS_AT_ONCE)
    app.state.streams = stream.StreamSlots(settings.api_stream_max, settings.api_stream_max_per_key)
    app.state.metrics = ApiMetrics()
    app.state.head_revision = health.head_revision()

    problems.install(app)
    app.add_exception_handler(PoolTimeout, _on_database_down)
    app.add_exception_handler(psycopg.OperationalError, _on_database_down)
    # A subclass of OperationalError: the more specific handler wins.
    app.add_exception_handler(psycopg.errors.QueryCanceled, _on_statement_timeout)
    app.add_exception_handler(psycopg.DataError, _on_refused_by_database)
    app.add_exception_handler(psycopg.IntegrityError, _on_refused_by_database)
    app.add_middleware(
        BodyLimitMiddleware,
        authenticate=current_principal,
        default=(settings.api_max_body_bytes, "URBANPULSE_API_MAX_BODY_BYTES"),
        limits={
            "/v1/registry/bulk": (
                settings.api_max_body_bytes_bulk,
                "URBANPULSE_API_MAX_BODY_BYTES_BULK",
            ),
            "/v1/imports": (settings.import_max_body_bytes, "URBANPULSE_IMPORT_MAX_BODY_BYTES"),
        },
    )
    app.add_middleware(
        stream.StallGuard,
        path="/v1/stream",
        timeout_s=settings.api_stream_stall_timeout.total_seconds(),
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, root=app)

    app.include_router(health.router)
    app.include_router(ngsi_router, prefix="/ngsi-ld/v1")  # NGSI-LD subset, same keys as /v1
    app.include_router(pages.router)
    v1 = (registry, bulk, readings, quarantine, kpis, alerts, stream, kpi_settings)
    # Issue 16: notification subscriptions and dead letters; history import and open-data export.
    # Issue 16: retention policies and audited erasure.
    for module in (*v1, notifications, dataio, retention):
        app.include_router(module.router, prefix="/v1")
    return app
