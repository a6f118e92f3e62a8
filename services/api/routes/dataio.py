"""Data in and out over HTTP (issue 16), the same work as ``urbanpulse import`` / ``export``.

- ``POST /v1/imports``: an engineer's smaller history file (registry:write; at most
  URBANPULSE_IMPORT_MAX_BODY_BYTES, bigger files go through the CLI), imported like the CLI does:
  validated, quarantined with file and line, written once, resumable, counted. It writes
  readings, which the API's own role may not in deploy/: it connects through
  URBANPULSE_IMPORT_DATABASE_URL (a login of the ingestion role) when set, and answers 503
  naming that setting when its role may not write what an import writes.
- ``GET /v1/exports/readings`` and ``/v1/exports/kpis``: CSV, JSON or Parquet, streamed (the
  readings through a server-side cursor). Sensor-level readings only where
  URBANPULSE_OPEN_DATA_SENSOR_LEVEL allows them.
- ``GET /v1/exports/catalog``: the DCAT-AP description of those exports for a period.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlencode

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AwareDatetime

from services.dataio import dcat, exporter, importer
from services.dataio.bundle import spatial
from services.dataio.exporter import Level, OutputFormat, Rollup, Selection
from services.dataio.sources import Format, parse_mapping, zone
from services.kpi.catalog import KPIS
from services.settings import Settings
from services.storage.urls import libpq_url

from ..deps import Reader, RegistryWriter, get_pool, statement_timeout_ms
from ..problems import Problem, invalid_all, responses
from ..streaming import ClosingStreamingResponse
from .kpis import check_bounds
from .readings import Resolution, span_problem

router = APIRouter(tags=["data in and out"])

_MEDIA_FORMATS = {
    "text/csv": Format.CSV,
    "application/x-ndjson": Format.JSONL,
    "application/jsonl": Format.JSONL,
    "application/vnd.apache.parquet": Format.PARQUET,
}
# A spooled upload stays in memory up to this, then goes to a temporary file.
_SPOOL_BYTES = 4 * 1024 * 1024

Start = Annotated[AwareDatetime, Query(description="inclusive, with a UTC offset")]
End = Annotated[AwareDatetime, Query(description="exclusive, with a UTC offset")]
District = Annotated[str | None, Query(max_length=128, description="one district (default all)")]
Domain = Annotated[
    str | None, Query(max_length=32, description="energy, water, waste, traffic, environment, ict")
]
# What an export answers, by its ``format``: documented so clients (and the schema tests) know.
_FILES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file, streamed (format=csv, json or parquet)",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
FormatQuery = Annotated[OutputFormat, Query(alias="format", description="csv, json or parquet")]


@router.post(
    "/imports",
    responses=responses(401, 403, 413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "sensor,quantity,time,value,unit\n"
                    "fdr-0001,voltage,2025-03-01T00:00:00Z,230.1,V\n",
                },
            },
        }
    },
)
async def import_history(
    *,
    request: Request,
    _: RegistryWriter,
    source: Annotated[
        str, Query(min_length=1, max_length=200, description="the file's name, for the quarantine")
    ] = "upload",
    mapping: Annotated[
        str | None, Query(alias="map", max_length=500, description="sensor=device_id,time=ts")
    ] = None,
    timezone: Annotated[str, Query(max_length=64, description="zone of naive times")] = "UTC",
    again: Annotated[bool, Query(description="import a file imported before once more")] = False,
) -> JSONResponse:
    """Import a history file through the live validation; the same body sent twice stores once.
    Answers the counts. Content-Type: text/csv (columns sensor, quantity, time, value, unit),
    application/x-ndjson (a SenML pack a line) or application/vnd.apache.parquet."""
    settings: Settings = request.app.state.settings
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = _MEDIA_FORMATS.get(media_type)
    if fmt is None:
        raise Problem(
            415, detail="send text/csv, application/x-ndjson or application/vnd.apache.parquet"
        )
    # A bad map, time zone or file is a SourceError, which names the input at fault: the one
    # handler of domain errors answers it (422).
    columns = parse_mapping(mapping)
    zone(timezone)
    url = settings.import_database_url or settings.database_url
    assert url is not None
    await run_in_threadpool(_check_import_role, url, settings.import_database_url is not None)
    spool = await _spooled_body(request)

    def run() -> importer.ImportResult:
        with spool, psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
            return importer.import_file(
                conn,
                spool,
                fmt,
                source=source,
                policy=importer.import_policy(settings),
                mapping=columns,
                timezone=timezone,
                max_entries_per_unit=settings.quarantine_max_entries_per_message,
                again=again,
            )

    result = await run_in_threadpool(run)
    return JSONResponse(result.as_dict())


def _check_import_role(url: str, own_setting: bool) -> None:
    """503 naming URBANPULSE_IMPORT_DATABASE_URL when the import's role may not write what an
    import writes: in deploy/ the API's role may not write readings, by design, and an import
    that failed on its first batch would have answered 500 after reading the whole body."""
    with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
        missing = importer.missing_privileges(conn)
        role = conn.info.user
    if not missing:
        return
    where = (
        "the role of URBANPULSE_IMPORT_DATABASE_URL"
        if own_setting
        else "this API's database role (set URBANPULSE_IMPORT_DATABASE_URL to give imports "
        "their own)"
    )
    raise Problem(
        503,
        detail=f"imports are not available here: {where}, {role!r}, may not write what an "
        f"import writes ({', '.join(missing)}). Use a login of the ingestion role "
        "(urbanpulse_ingest), or `urbanpulse import`.",
        setting="URBANPULSE_IMPORT_DATABASE_URL",
        missing=missing,
    )


async def _spooled_body(request: Request) -> Any:
    """The body in a spooled file. Its size is bounded before it gets here: the body-limit
    middleware refuses an import past URBANPULSE_IMPORT_MAX_BODY_BYTES while it streams in."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed by run()
    async for chunk in request.stream():
        spool.write(chunk)
    spool.seek(0)
    return spool


def _asked(start: Start, end: End, district: District = None, domain: Domain = None) -> Selection:
    """The period, district and domain an export names, as given: :func:`_checked` checks them
    in the route, after what the route refuses first."""
    return Selection(start, end, district, domain)


Asked = Annotated[Selection, Depends(_asked)]


def _checked(selection: Selection) -> Selection:
    selection.check()  # an ExportError naming query.end, answered by the one handler
    domain = selection.domain
    if domain is not None and domain not in {k.domain.value for k in KPIS.values()}:
        raise invalid_all([("query.domain", f"unknown domain {domain!r}")])
    return selection


def _filename(kind: str, selection: Selection, fmt: OutputFormat) -> str:
    return f"{kind}_{selection.start:%Y%m%d}_{selection.end:%Y%m%d}.{fmt.value}"


def _stream(request: Request, chunks: Any, fmt: OutputFormat, name: str) -> StreamingResponse:
    return ClosingStreamingResponse(
        chunks,
        media_type=exporter.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/exports/readings",
    response_class=StreamingResponse,
    responses={**_FILES, **responses(401, 403, 422)},
)
def export_readings(
    *,
    request: Request,
    _: Reader,
    asked: Asked,
    rollup: Annotated[Rollup, Query(description="raw, 1m, 1h or 1d")] = Rollup.HOUR,
    level: Annotated[
        Level | None, Query(description="sensor or district (default: the open-data setting)")
    ] = None,
    fmt: FormatQuery = OutputFormat.CSV,
) -> StreamingResponse:
    """Readings of a period (count, mean, min, max per bucket), streamed: per sensor, or per
    district and quantity, as URBANPULSE_OPEN_DATA_SENSOR_LEVEL allows."""
    settings: Settings = request.app.state.settings
    allowed = settings.open_data_sensor_level
    if allowed == "omit":
        raise Problem(
            403,
            detail="readings are not published here (URBANPULSE_OPEN_DATA_SENSOR_LEVEL=omit)",
        )
    chosen = level or Level(allowed)
    if chosen is Level.SENSOR and allowed != "sensor":
        raise Problem(
            403,
            detail="sensor-level readings are not published here "
            f"(URBANPULSE_OPEN_DATA_SENSOR_LEVEL={allowed}); ask for level=district",
        )
    selection = _checked(asked)
    # The same spans per rollup as /readings: a stream is bounded in memory, not in work.
    refused = span_problem(settings, Resolution(rollup.value), selection.start, selection.end)
    if refused is not None:
        raise refused
    pool = get_pool(request)

    def chunks() -> Iterator[bytes]:
        # The connection is held for the stream's whole length: the rows stream on it (COPY,
        # or for Parquet a server-side cursor); closing the stream cancels the query.
        with pool.connection() as conn:
            yield from exporter.readings_file(conn, selection, rollup, chosen, fmt)

    return _stream(request, chunks(), fmt, _filename("readings", selection, fmt))


@router.get(
    "/exports/kpis",
    response_class=StreamingResponse,
    responses={**_FILES, **responses(401, 403, 422)},
)
def export_kpis(
    *,
    request: Request,
    _: Reader,
    asked: Asked,
    grain: Annotated[
        str | None, Query(pattern="^(hour|day|week|month|year)$", description="default: period")
    ] = None,
    fmt: FormatQuery = OutputFormat.CSV,
) -> StreamingResponse:
    """KPI values of a period with rating, coverage and baseline, per district and the city."""
    settings: Settings = request.app.state.settings
    selection = _checked(asked)
    # The KPI endpoints' bounds: the longest range, the most buckets, a statement timeout.
    check_bounds(settings, selection.start, selection.end, grain)
    timeout_ms = statement_timeout_ms(settings.api_statement_timeout_kpis)
    with get_pool(request).connection() as conn:
        # For this transaction only: the pooled connection keeps the default of other requests.
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))
        rows = list(exporter.kpi_rows(conn, selection, grain))
    chunks = exporter.encode(rows, exporter.KPI_COLUMNS, fmt)
    return _stream(request, chunks, fmt, _filename("kpis", selection, fmt))


@router.get(
    "/exports/catalog",
    responses={
        200: {
            "description": "DCAT-AP (JSON-LD)",
            "content": {"application/ld+json": {"schema": {"type": "object"}}},
        },
        **responses(401, 403, 422),
    },
)
def export_catalog(
    *,
    request: Request,
    _: Reader,
    asked: Asked,
    fmt: FormatQuery = OutputFormat.CSV,
) -> JSONResponse:
    """The DCAT-AP description (JSON-LD) of this period's open data, its distributions the
    export URLs above, for a CKAN portal to harvest."""
    settings: Settings = request.app.state.settings
    selection = _checked(asked)
    start, end, district, domain = (
        selection.start,
        selection.end,
        selection.district,
        selection.domain,
    )
    with get_pool(request).connection() as conn:
        names, bbox = spatial(conn, district)
    query: dict[str, str] = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "format": fmt.value,
    }
    if district:
        query["district"] = district
    if domain:
        query["domain"] = domain
    base = str(request.base_url).rstrip("/") + "/v1/exports/"
    media = exporter.MEDIA_TYPES[fmt]
    distributions = []
    if settings.open_data_sensor_level != "omit":
        distributions.append(
            dcat.Distribution(
                f"Readings per hour ({settings.open_data_sensor_level} level)",
                base + "readings?" + urlencode(query),
                media,
            )
        )
    distributions.append(
        dcat.Distribution(
            "KPI values with rating, coverage and baseline",
            base + "kpis?" + urlencode(query),
            media,
        )
    )
    description = dcat.describe(
        dcat.Bundle(
            identifier=f"{start:%Y%m%d}-{end:%Y%m%d}-{district or 'city'}-{domain or 'all'}",
            title=settings.open_data_title,
            description=f"Sensor readings and KPI values of {', '.join(names) or 'the city'} "
            f"from {start.date()} to {end.date()}.",
            publisher=settings.open_data_publisher,
            licence=settings.open_data_licence,
            start=start,
            end=end,
            districts=names,
            domains=[domain] if domain else sorted({k.domain.value for k in KPIS.values()}),
            bbox=bbox,
            distributions=distributions,
        )
    )
    return JSONResponse(description, media_type="application/ld+json")
