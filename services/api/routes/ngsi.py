"""A read-only NGSI-LD subset (ETSI GS CIM 009) at ``/ngsi-ld/v1``: the city for FIWARE tools.

- ``GET /entities``: sensors' latest readings as their Smart Data Models (AirQualityObserved,
  NoiseLevelObserved, ...) and KPI values as ``KeyPerformanceIndicator``; filters ``type``,
  ``id``, ``attrs``, ``q`` (simple comparisons joined by ``;``), ``limit`` (default 20, at most
  1000), ``offset``, ``count=true`` (``NGSILD-Results-Count``) and ``options=keyValues``.
- ``GET /entities/{id}``: one entity, with the same ``attrs`` and ``options``.
- ``GET /temporal/entities`` and ``/temporal/entities/{id}``: the aggregated temporal
  representation of sensors' attributes over ``timerel=between`` ``timeAt`` .. ``endTimeAt``,
  with ``aggrMethods`` (avg, min, max, sum, totalCount) per ``aggrPeriodDuration`` (PT1M, PT1H
  or P1D), answered from the rollups exactly as ``/v1/sensors/{id}/readings`` is. A sensor with
  no instance of the attributes asked in the range is left out (after ``limit``/``offset``,
  which count sensors).

Kept simple on purpose: ``q``, ``attrs`` or several types filter the entities in memory (a
single type without them is paged in SQL); no geo-queries, no ``idPattern``, no unaggregated
temporal values; entity types no model fits (DMA inflow, pressure) are not served.

Errors are NGSI-LD ProblemDetails (``https://uri.etsi.org/ngsi-ld/errors/BadRequestData``,
``ResourceNotFound``, ``NotAcceptable``). ``Accept: application/ld+json`` puts ``@context`` in
each entity; ``application/json`` sends the core context in a ``Link`` header instead. The same
API keys as ``/v1`` (permission ``read``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES, QUANTITIES_BY_KEY
from services.kpi.catalog import KPIS
from services.ngsi import models
from services.ngsi.models import Entity, QueryError
from services.storage import kpi_current, rollups

from ..deps import Conn, Reader
from ..problems import Problem, responses
from .readings import _WIDTH_S, Resolution, max_span, rollup_query

router = APIRouter(tags=["ngsi-ld"])

LD_JSON = "application/ld+json"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_ID = 300
_CONTEXT_LINK = (
    f'<{models.CORE_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="{LD_JSON}"'
)
# aggrPeriodDuration -> the rollup answering it
_PERIODS = {"PT1M": Resolution.MINUTE, "PT1H": Resolution.HOUR, "P1D": Resolution.DAY}
_LIST = {"type": "array", "items": {"type": "object"}}
_ONE = {"type": "object"}
_ERRORS = responses(400, 401, 403, 406)


def _documented(schema: dict[str, Any], *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: entities in either JSON form, and NGSI-LD problem details."""
    ok = {
        "description": "OK",
        "content": {LD_JSON: {"schema": schema}, "application/json": {"schema": schema}},
    }
    return {**_ERRORS, **responses(*errors), 200: ok}


AGGREGATES = ("avg", "min", "max", "sum", "totalCount")
_MAPPED_QUANTITIES = sorted(
    {QUANTITIES[q].key for model in models.MODELS.values() for q in model.targets}
)


def bad_request(detail: str) -> Problem:
    return Problem(400, "Bad request data", detail, type=ERRORS + "BadRequestData")


def not_found(detail: str) -> Problem:
    return Problem(404, "Resource not found", detail, type=ERRORS + "ResourceNotFound")


def _wants_ld(request: Request) -> bool:
    """Whether to answer JSON-LD; a 406 when the client accepts neither JSON form."""
    accept = request.headers.get("accept", "")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if not types:
        return False
    if LD_JSON in types:
        return True
    if any(t in ("application/json", "application/*", "*/*") for t in types):
        return False
    raise Problem(
        406,
        "Not acceptable",
        "this API answers application/json or application/ld+json",
        type=ERRORS + "NotAcceptable",
    )


def _reply(body: Any, ld: bool, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if not ld:
        headers["Link"] = _CONTEXT_LINK
    return Response(
        json.dumps(body, allow_nan=False),
        media_type=LD_JSON if ld else "application/json",
        headers=headers,
    )


def _list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise bad_request(f"an empty item in {value!r}")
    return items


def _key_values(options: str | None, format: str | None) -> bool:
    chosen = set(_list(options) or [])
    unknown = chosen - {"keyValues", "normalized", "sysAttrs"}
    if unknown:
        raise bad_request(f"unknown options: {', '.join(sorted(unknown))}")
    if format is not None and format not in ("keyValues", "normalized"):
        raise bad_request(f"unknown format {format!r}")
    return "keyValues" in chosen or format == "keyValues"


def _natural(value: str | None, name: str, default: int, maximum: int | None = None) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{name} must be a whole number, not {value!r}") from None
    if number < 0 or (maximum is not None and number > maximum):
        raise bad_request(f"{name} must be between 0 and {maximum if maximum else 'any'}")
    return number


# The sensors served: of the kinds asked (and the ids, when asked), not retired.
_SERVED = (
    "kind = ANY(%(kinds)s) AND status <> 'retired' "
    "AND (%(ids)s::text[] IS NULL OR id = ANY(%(ids)s::text[]))"
)


def _sensors(
    conn: psycopg.Connection[TupleRow],
    kinds: Sequence[str],
    ids: Sequence[str] | None,
    page: slice | None = None,
) -> list[tuple[int, models.Sensor]]:
    """Active sensors of ``kinds`` (and ``ids``), by id, ``page`` of them when given, with their
    latest reading of each quantity."""
    rows = conn.execute(
        "SELECT s.key, s.id, s.kind, s.interval_s, s.district_id, s.latitude, "  # noqa: S608 - _SERVED is a constant
        "s.longitude, l.quantity_key, l.time, l.value "
        f"FROM (SELECT * FROM sensors WHERE {_SERVED} "
        "  ORDER BY id LIMIT %(limit)s OFFSET %(offset)s) AS s "
        "CROSS JOIN unnest(%(quantities)s::int[]) AS q(key) "
        "LEFT JOIN LATERAL (SELECT r.quantity_key, r.time, r.value FROM readings AS r "
        "  WHERE r.sensor_key = s.key AND r.quantity_key = q.key "
        "  ORDER BY r.time DESC LIMIT 1) AS l ON true "
        "ORDER BY s.id",
        {
            "quantities": _MAPPED_QUANTITIES,
            "kinds": list(kinds),
            "ids": ids,
            "limit": page.stop - page.start if page else None,
            "offset": page.start if page else 0,
        },
    ).fetchall()
    found: dict[str, tuple[int, dict[str, Any], dict[str, tuple[datetime, float]]]] = {}
    for key, sid, kind, interval, district, lat, lon, qkey, moment, value in rows:
        if sid not in found:
            fields = {
                "id": sid,
                "kind": kind,
                "interval_s": float(interval),
                "district_id": district,
                "latitude": lat,
                "longitude": lon,
            }
            found[sid] = (int(key), fields, {})
        quantity = QUANTITIES_BY_KEY.get(int(qkey)) if qkey is not None else None
        if quantity is not None and quantity.name in models.MODELS[kind].targets:
            found[sid][2][quantity.name] = (moment, float(value))
    return [(key, models.Sensor(**fields, latest=latest)) for key, fields, latest in found.values()]


def _count(
    conn: psycopg.Connection[TupleRow], kinds: Sequence[str], ids: Sequence[str] | None
) -> int:
    row = conn.execute(
        f"SELECT count(*) FROM sensors WHERE {_SERVED}",  # noqa: S608 - a constant
        {"kinds": list(kinds), "ids": ids},
    ).fetchone()
    return int(row[0]) if row else 0


def _kpis(conn: psycopg.Connection[TupleRow], ids: Sequence[str] | None) -> list[Entity]:
    entities = []
    for row in kpi_current.rows(conn):
        kpi = KPIS.get(row["kpi_id"])
        record = models.KpiRecord(
            **row,
            name=kpi.name if kpi else None,
            description=kpi.definition if kpi else None,
        )
        entity = models.kpi_entity(record)
        if ids is None or entity.id in ids:
            entities.append(entity)
    return entities


def _local_ids(ids: Sequence[str] | None, entity_type: str) -> list[str] | None:
    """The registry ids behind the NGSI-LD ids of ``entity_type`` among ``ids``."""
    if ids is None:
        return None
    local = []
    for value in ids:
        parsed = models.parse_entity_id(value)
        if parsed is not None and parsed[0] == entity_type:
            local.append(parsed[1])
    return local


def _entities(
    conn: psycopg.Connection[TupleRow], types: Sequence[str], ids: Sequence[str] | None
) -> list[Entity]:
    entities: list[Entity] = []
    for entity_type in types:
        if entity_type == models.KPI_TYPE:
            entities += _kpis(conn, ids)
            continue
        kinds = models.kinds_of(entity_type)
        if kinds:
            found = _sensors(conn, kinds, _local_ids(ids, entity_type))
            entities += [models.observation(sensor) for _, sensor in found]
    return entities


def _types(type: str | None, ids: Sequence[str] | None) -> list[str]:
    if type is not None:
        return [t for t in (_list(type) or []) if t in models.ENTITY_TYPES]
    if ids is not None:
        parsed = [models.parse_entity_id(i) for i in ids]
        return list(dict.fromkeys(p[0] for p in parsed if p is not None))
    return list(models.ENTITY_TYPES)


@router.get("/entities", responses=_documented(_LIST))
def query_entities(
    _: Reader,
    request: Request,
    conn: Conn,
    *,
    type: str | None = None,
    id: str | None = None,
    attrs: str | None = None,
    q: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
    count: str | None = None,
    options: str | None = None,
    format: str | None = None,
) -> Response:
    """Entities matching every filter given, ordered by type then id."""
    ld = _wants_ld(request)
    if type is None and id is None and attrs is None and q is None:
        raise bad_request("give at least one of type, id, attrs or q")
    ids = _list(id)
    wanted = _list(attrs)
    try:
        terms = models.parse_q(q) if q is not None else ()
    except QueryError as exc:
        raise bad_request(f"invalid q: {exc}") from None
    if count not in (None, "true", "false"):
        raise bad_request("count is true or false")
    first = _natural(offset, "offset", 0)
    size = _natural(limit, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    key_values = _key_values(options, format)
    types = _types(type, ids)
    page = slice(first, first + size)
    kinds = models.kinds_of(types[0]) if len(types) == 1 else []
    if kinds and not terms and wanted is None:
        # One sensor type and nothing to filter on values: the page is cut in SQL, so a city of
        # many meters reads one page's latest readings, not every meter's.
        local = _local_ids(ids, types[0])
        entities = [models.observation(s) for _, s in _sensors(conn, kinds, local, page)]
        total = _count(conn, kinds, local) if count == "true" else 0
    else:
        found = [
            e
            for e in _entities(conn, types, ids)
            if models.matches(e, terms) and (wanted is None or any(e.has(a) for a in wanted))
        ]
        entities, total = found[page], len(found)
    body = [
        models.render(e, key_values=key_values, attrs=wanted, with_context=ld) for e in entities
    ]
    headers = {"NGSILD-Results-Count": str(total)} if count == "true" else None
    return _reply(body, ld, headers)


def _one(conn: psycopg.Connection[TupleRow], entity_id: str) -> Entity:
    if ":" not in entity_id or len(entity_id) > MAX_ID:
        raise bad_request(f"{entity_id[:MAX_ID]!r} is not a URI of at most {MAX_ID} characters")
    parsed = models.parse_entity_id(entity_id)
    found = _entities(conn, [parsed[0]], [entity_id]) if parsed else []
    if not found:
        raise not_found(f"no entity {entity_id!r}")
    return found[0]


@router.get("/entities/{entity_id}", responses=_documented(_ONE, 404))
def retrieve_entity(
    _: Reader,
    request: Request,
    conn: Conn,
    entity_id: str,
    *,
    attrs: str | None = None,
    options: str | None = None,
    format: str | None = None,
) -> Response:
    ld = _wants_ld(request)
    key_values = _key_values(options, format)
    entity = _one(conn, entity_id)
    return _reply(
        models.render(entity, key_values=key_values, attrs=_list(attrs), with_context=ld), ld
    )


# --- temporal ------------------------------------------------------------------------------------


def _moment(value: str | None, name: str) -> datetime:
    if value is None:
        raise bad_request(f"{name} is required with timerel=between")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} is not an ISO 8601 date-time: {value!r}") from None
    if moment.tzinfo is None:
        raise bad_request(f"{name} must carry a time zone (Z or an offset): {value!r}")
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TemporalQuery:
    """A temporal query's parameters as sent (NGSI-LD's names), before they are checked."""

    attrs: str | None = None
    timerel: str | None = None
    timeAt: str | None = None  # noqa: N815 - NGSI-LD's parameter names
    endTimeAt: str | None = None  # noqa: N815
    aggrMethods: str | None = None  # noqa: N815
    aggrPeriodDuration: str | None = None  # noqa: N815
    options: str | None = None


Temporal = Annotated[TemporalQuery, Depends()]


@router.get("/temporal/entities", responses=_documented(_LIST))
def query_temporal(
    _: Reader,
    request: Request,
    conn: Conn,
    query: Temporal,
    *,
    type: str | None = None,
    id: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
) -> Response:
    """Aggregated temporal values of sensor entities."""
    if type is None and id is None and query.attrs is None:
        raise bad_request("give at least one of type, id or attrs")
    ids = _list(id)
    first = _natural(offset, "offset", 0)
    size = _natural(limit, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    ld = _wants_ld(request)
    page = slice(first, first + size)
    return _reply(_temporal(request, conn, _types(type, ids), ids, query, ld=ld, page=page), ld)


@router.get("/temporal/entities/{entity_id}", responses=_documented(_ONE, 404))
def retrieve_temporal(
    _: Reader, request: Request, conn: Conn, entity_id: str, query: Temporal
) -> Response:
    ld = _wants_ld(request)
    entity = _one(conn, entity_id)
    return _reply(
        _temporal(request, conn, [entity.type], [entity_id], query, ld=ld, page=slice(0, 1))[0], ld
    )


def _temporal(
    request: Request,
    conn: psycopg.Connection[TupleRow],
    types: Sequence[str],
    ids: Sequence[str] | None,
    query: TemporalQuery,
    *,
    ld: bool,
    page: slice,
) -> list[dict[str, Any]]:
    """The aggregated temporal representation of the sensor entities of ``types`` (``ids``)."""
    aggr_methods, aggr_period, options = query.aggrMethods, query.aggrPeriodDuration, query.options
    if models.KPI_TYPE in types and (ids is not None or len(types) == 1):
        raise bad_request("KPI values have no temporal history here: see /v1/kpis/{id}/series")
    methods = _list(aggr_methods)
    if methods is None:
        raise bad_request(
            "this server answers temporal queries aggregated only: give aggrMethods "
            f"({', '.join(AGGREGATES)}) and aggrPeriodDuration"
        )
    unknown = [m for m in methods if m not in AGGREGATES]
    if unknown:
        raise bad_request(f"unknown aggrMethods {', '.join(unknown)}; one of {AGGREGATES}")
    if options is not None and set(_list(options) or []) - {"aggregatedValues"}:
        raise bad_request("options: only aggregatedValues is supported here")
    if aggr_period not in _PERIODS:
        raise bad_request(f"aggrPeriodDuration is one of {', '.join(_PERIODS)}")
    resolution = _PERIODS[aggr_period]
    if query.timerel != "between":
        raise bad_request("timerel=between with timeAt and endTimeAt is required")
    start, end = _moment(query.timeAt, "timeAt"), _moment(query.endTimeAt, "endTimeAt")
    if end <= start:
        raise bad_request("endTimeAt must be after timeAt")
    limit = max_span(request.app.state.settings, resolution)
    if end - start > limit:
        raise bad_request(
            f"{aggr_period} covers at most {limit.total_seconds():g} s "
            f"(URBANPULSE_API_MAX_SPAN_{resolution.value.upper()}): narrow the range"
        )
    wanted = _list(query.attrs)
    sensors: list[tuple[int, models.Sensor]] = []
    for entity_type in types:
        kinds = models.kinds_of(entity_type)
        if kinds:
            sensors += _sensors(conn, kinds, _local_ids(ids, entity_type))
    body = []
    for key, sensor in sensors[page]:
        model = models.MODELS[sensor.kind]
        entity: dict[str, Any] = {
            "id": models.entity_id(model.type, sensor.id),
            "type": model.type,
        }
        for quantity, target in model.targets.items():
            if wanted is not None and target.name not in wanted:
                continue
            statement, values = rollup_query(resolution, key, QUANTITIES[quantity].key, start, end)
            # Never prepared, as /readings: a generic plan would plan every partition.
            rows = conn.execute(statement, values, prepare=False).fetchall()
            if rows:
                entity[target.name] = _aggregated(rows, methods, target, resolution, end)
        if len(entity) == 2:
            continue  # no instance of any attribute asked in the range: not a match
        if ld:
            entity["@context"] = list(model.context)
        body.append(entity)
    return body


def _aggregated(
    rows: Sequence[tuple[Any, ...]],
    methods: Sequence[str],
    target: models.Target,
    resolution: Resolution,
    end: datetime,
) -> dict[str, Any]:
    """One attribute in NGSI-LD's aggregated temporal representation: per method, a list of
    ``[value, from, to]`` per period, in the model's unit (scaled; a model's integer or
    ceiling applies to one reading, not to an aggregate)."""
    attribute: dict[str, Any] = {"type": "Property"}
    for method in methods:
        attribute[method] = []
    for bucket, mean, low, high, count in rows:
        width = timedelta(seconds=_WIDTH_S[resolution])
        stop = min(rollups.floor(bucket, width) + width, end)
        span = [bucket.isoformat().replace("+00:00", "Z"), stop.isoformat().replace("+00:00", "Z")]
        values = {
            "avg": mean * target.scale,
            "min": low * target.scale,
            "max": high * target.scale,
            "sum": mean * int(count) * target.scale,
            "totalCount": int(count),
        }
        for method in methods:
            attribute[method].append([values[method], *span])
    return attribute
