"""A read-only NGSI-LD subset (ETSI GS CIM 009) at ``/ngsi-ld/v1``: the city for FIWARE tools.

- ``GET /entities``: sensors' latest readings as their Smart Data Models (AirQualityObserved,
  NoiseLevelObserved, ...) and KPI values as ``KeyPerformanceIndicator``; filters ``type``,
  ``id``, ``idPattern`` (a regular expression found in the id; bounded, see
  :func:`services.ngsi.models.compile_id_pattern`), ``attrs``, ``q`` (simple comparisons joined
  by ``;``), a geo-query (``georel`` near;maxDistance==m / near;minDistance==m, within,
  intersects, disjoint, equals, contains, overlaps; ``geometry`` Point, Polygon or MultiPolygon;
  ``coordinates``; ``geoproperty``, default ``location``: see :mod:`services.ngsi.geo`),
  ``limit`` (default 20, at most 1000), ``offset``, ``count=true`` (``NGSILD-Results-Count``) and
  ``options=keyValues``.
- ``GET /entities/{id}``: one entity, with the same ``attrs`` and ``options``.
- ``GET /temporal/entities`` and ``/temporal/entities/{id}``: sensors' attributes over time,
  the sensors chosen by ``type``, ``id``, ``idPattern`` and a geo-query (on their latest state);
  ``limit``/``offset`` count sensors, and a sensor with no instance of the attributes asked is
  left out of a query. Two representations:

  - raw instances (no ``aggrMethods``): each attribute an array of
    ``{"type": "Property", "value", "observedAt", "unitCode"}``, or with
    ``options=temporalValues`` ``{"type": "Property", "values": [[value, observedAt], ...]}``;
    ``timerel=before`` (strictly before ``timeAt``), ``after`` (strictly after) or ``between``
    (``timeAt`` included, ``endTimeAt`` not), or no timerel for the whole history; ``lastN``
    keeps the newest N (still oldest first). At most ``MAX_INSTANCES`` (1000) per attribute and
    ``MAX_ANSWER_INSTANCES`` (10,000) per answer: past that the answer is a 206 whose
    ``Content-Range: date-time <start>-<end>/*`` names the span every attribute is complete
    over (with lastN, ``<newest>-<oldest>/<lastN>``); ask again with ``timerel=after&timeAt=<end>``
    (with lastN, ``before`` ``<oldest>``) for the rest.
  - aggregated (``aggrMethods`` avg, min, max, sum, totalCount per ``aggrPeriodDuration`` PT1M,
    PT1H or P1D, ``timerel=between`` only), answered from the rollups exactly as
    ``/v1/sensors/{id}/readings`` is.

Kept simple on purpose: ``q``, ``idPattern``, a geo-query, ``attrs`` or several types filter the
entities in memory (a single type without them is paged in SQL); no ``q`` on temporal queries;
entity types no model fits (DMA inflow, pressure) are not served.

Errors are NGSI-LD ProblemDetails (``https://uri.etsi.org/ngsi-ld/errors/BadRequestData``,
``ResourceNotFound``, ``NotAcceptable``). ``Accept: application/ld+json`` puts ``@context`` in
each entity; ``application/json`` sends the core context in a ``Link`` header instead. The same
API keys as ``/v1`` (permission ``read``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES, QUANTITIES_BY_KEY
from services.kpi.catalog import KPIS
from services.ngsi import geo, models
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


def _documented(
    schema: dict[str, Any], *errors: int, partial: bool = False
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: entities in either JSON form, and NGSI-LD problem details; with
    ``partial``, the 206 of a temporal answer cut at MAX_INSTANCES."""
    content = {LD_JSON: {"schema": schema}, "application/json": {"schema": schema}}
    documented: dict[int | str, dict[str, Any]] = {
        **_ERRORS,
        **responses(*errors),
        200: {"description": "OK", "content": content},
    }
    if partial:
        documented[206] = {
            "description": "Partial: more instances than one answer carries",
            "content": content,
            "headers": {
                "Content-Range": {
                    "description": "date-time <start>-<end>/<lastN or *>: the span complete",
                    "schema": {"type": "string"},
                }
            },
        }
    return documented


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
    filtering: Filtering,
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
    if all(v is None for v in (type, id, attrs, q, filtering.idPattern, filtering.georel)):
        raise bad_request("give at least one of type, id, idPattern, attrs, q or georel")
    ids = _list(id)
    wanted = _list(attrs)
    filters = filtering.parse(q)
    if count not in (None, "true", "false"):
        raise bad_request("count is true or false")
    first = _natural(offset, "offset", 0)
    size = _natural(limit, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    key_values = _key_values(options, format)
    types = _types(type, ids)
    page = slice(first, first + size)
    kinds = models.kinds_of(types[0]) if len(types) == 1 else []
    if kinds and not filters and wanted is None:
        # One sensor type and nothing to filter on values: the page is cut in SQL, so a city of
        # many meters reads one page's latest readings, not every meter's.
        local = _local_ids(ids, types[0])
        entities = [models.observation(s) for _, s in _sensors(conn, kinds, local, page)]
        total = _count(conn, kinds, local) if count == "true" else 0
    else:
        found = [
            e
            for e in _entities(conn, types, ids)
            if filters.match(e) and (wanted is None or any(e.has(a) for a in wanted))
        ]
        entities, total = found[page], len(found)
    body = [
        models.render(e, key_values=key_values, attrs=wanted, with_context=ld) for e in entities
    ]
    headers = {"NGSILD-Results-Count": str(total)} if count == "true" else None
    return _reply(body, ld, headers)


@dataclass(frozen=True, slots=True)
class Filters:
    """What an entity must match beyond its type and id: ``q``, ``idPattern`` and a geo-query."""

    terms: tuple[models.Term, ...] = ()
    pattern: models.IdPattern | None = None
    where: geo.GeoQuery | None = None

    def __bool__(self) -> bool:
        return bool(self.terms) or self.pattern is not None or self.where is not None

    def match(self, entity: Entity) -> bool:
        if self.pattern is not None and self.pattern.search(entity.id) is None:
            return False
        where = self.where
        if where is not None and not any(
            a.name == where.geoproperty and a.kind == "GeoProperty" and where.holds(a.value)
            for a in entity.attrs
        ):
            return False
        return models.matches(entity, self.terms)


@dataclass(frozen=True, slots=True)
class FilterQuery:
    """The filtering parameters shared by entity and temporal queries (NGSI-LD's names)."""

    idPattern: str | None = None  # noqa: N815 - NGSI-LD's parameter names
    georel: str | None = None
    geometry: str | None = None
    coordinates: str | None = None
    geoproperty: str | None = None

    def parse(self, q: str | None = None) -> Filters:
        """The filters asked; a 400 naming what is malformed."""
        try:
            terms = models.parse_q(q) if q is not None else ()
        except QueryError as exc:
            raise bad_request(f"invalid q: {exc}") from None
        try:
            pattern = (
                models.compile_id_pattern(self.idPattern) if self.idPattern is not None else None
            )
        except QueryError as exc:
            raise bad_request(str(exc)) from None
        try:
            where = geo.parse(self.georel, self.geometry, self.coordinates, self.geoproperty)
        except QueryError as exc:
            raise bad_request(f"invalid geo-query: {exc}") from None
        return Filters(terms, pattern, where)


Filtering = Annotated[FilterQuery, Depends()]


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

# Raw instances of one attribute in one answer. More match: the answer is a 206 whose
# Content-Range says which span is complete, and the client asks again from its end.
MAX_INSTANCES = 1000
# ...and at most this many in one answer, over all its entities and attributes (a page of 1000
# sensors with six attributes each would otherwise read six million rows): once spent, each
# further attribute reads one instance, which cuts the whole answer there.
MAX_ANSWER_INSTANCES = 10 * MAX_INSTANCES


def _moment(value: str | None, name: str, timerel: str) -> datetime:
    if value is None:
        raise bad_request(f"{name} is required with timerel={timerel}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} is not an ISO 8601 date-time: {value!r}") from None
    if moment.tzinfo is None:
        raise bad_request(f"{name} must carry a time zone (Z or an offset): {value!r}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise bad_request(f"{name} is out of range: {value!r}") from None


@dataclass(frozen=True, slots=True)
class Window:
    """The instants a temporal query asks: after ``start`` (included unless ``open_start``),
    before ``end`` (excluded); None is unbounded."""

    start: datetime | None = None
    end: datetime | None = None
    open_start: bool = False


@dataclass(frozen=True, slots=True)
class TemporalQuery:
    """A temporal query's parameters as sent (NGSI-LD's names), before they are checked."""

    attrs: str | None = None
    timerel: str | None = None
    timeAt: str | None = None  # noqa: N815 - NGSI-LD's parameter names
    endTimeAt: str | None = None  # noqa: N815
    timeproperty: str | None = None
    lastN: str | None = None  # noqa: N815
    aggrMethods: str | None = None  # noqa: N815
    aggrPeriodDuration: str | None = None  # noqa: N815
    options: str | None = None
    q: str | None = None

    def window(self) -> Window:
        """``timerel`` with ``timeAt`` (and ``endTimeAt``): before is strictly before timeAt,
        after strictly after, between from timeAt (included) to endTimeAt (excluded)."""
        if self.timeproperty not in (None, "observedAt"):
            raise bad_request("timeproperty: instances here have observedAt only")
        if self.timerel is None:
            if self.timeAt is not None or self.endTimeAt is not None:
                raise bad_request("timeAt and endTimeAt need a timerel (before, after, between)")
            return Window()
        if self.timerel not in ("before", "after", "between"):
            raise bad_request(f"timerel is before, after or between, not {self.timerel!r}")
        at = _moment(self.timeAt, "timeAt", self.timerel)
        if self.timerel != "between":
            if self.endTimeAt is not None:
                raise bad_request("endTimeAt goes with timerel=between only")
            return Window(end=at) if self.timerel == "before" else Window(at, open_start=True)
        end = _moment(self.endTimeAt, "endTimeAt", self.timerel)
        if end <= at:
            raise bad_request("endTimeAt must be after timeAt")
        return Window(at, end)


Temporal = Annotated[TemporalQuery, Depends()]


@router.get("/temporal/entities", responses=_documented(_LIST, partial=True))
def query_temporal(
    _: Reader,
    request: Request,
    conn: Conn,
    query: Temporal,
    filtering: Filtering,
    *,
    type: str | None = None,
    id: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
) -> Response:
    """Temporal values of sensor entities: raw instances, or aggregated with ``aggrMethods``."""
    if all(v is None for v in (type, id, query.attrs, filtering.idPattern, filtering.georel)):
        raise bad_request("give at least one of type, id, idPattern, attrs or georel")
    ids = _list(id)
    first = _natural(offset, "offset", 0)
    size = _natural(limit, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    ld = _wants_ld(request)
    page = slice(first, first + size)
    answer = _temporal(
        request,
        conn,
        types=_types(type, ids),
        ids=ids,
        query=query,
        filters=filtering.parse(),
        ld=ld,
        page=page,
    )
    return _temporal_reply(answer.entities, answer, ld)


@router.get("/temporal/entities/{entity_id}", responses=_documented(_ONE, 404, partial=True))
def retrieve_temporal(
    _: Reader, request: Request, conn: Conn, entity_id: str, query: Temporal
) -> Response:
    ld = _wants_ld(request)
    entity = _one(conn, entity_id)
    answer = _temporal(
        request,
        conn,
        types=[entity.type],
        ids=[entity_id],
        query=query,
        filters=Filters(),
        ld=ld,
        page=slice(0, 1),
    )
    if answer.entities:
        body = answer.entities[0]
    else:  # it exists, with no instance in the window
        body = {"id": entity.id, "type": entity.type}
        if ld:
            body["@context"] = list(entity.context)
    return _temporal_reply(body, answer, ld)


@dataclass(slots=True)
class TemporalAnswer:
    entities: list[dict[str, Any]] = field(default_factory=list)
    content_range: str | None = None  # set when instances were left out: a 206


def _temporal_reply(body: Any, answer: TemporalAnswer, ld: bool) -> Response:
    if answer.content_range is None:
        return _reply(body, ld)
    response = _reply(body, ld, {"Content-Range": answer.content_range})
    response.status_code = 206
    return response


def _temporal(
    request: Request,
    conn: psycopg.Connection[TupleRow],
    *,
    types: Sequence[str],
    ids: Sequence[str] | None,
    query: TemporalQuery,
    filters: Filters,
    ld: bool,
    page: slice,
) -> TemporalAnswer:
    """The temporal representation of the sensor entities of ``types`` (``ids``) that match
    ``filters`` (on their latest state), ``page`` of them."""
    if models.KPI_TYPE in types and (ids is not None or len(types) == 1):
        raise bad_request("KPI values have no temporal history here: see /v1/kpis/{id}/series")
    if query.q is not None:
        raise bad_request(
            "q is not supported on temporal queries here: filter by type, id, "
            "idPattern, attrs or a geo-query"
        )
    window = query.window()
    methods = _list(query.aggrMethods)
    read: _Reader
    if methods is None:
        read = _raw_reader(query, window)
    else:
        read = _aggregated_reader(request, query, methods, window)
    wanted = _list(query.attrs)
    sensors: list[tuple[int, models.Sensor]] = []
    for entity_type in types:
        kinds = models.kinds_of(entity_type)
        if kinds:
            sensors += _sensors(conn, kinds, _local_ids(ids, entity_type))
    if filters:
        sensors = [(k, s) for k, s in sensors if filters.match(models.observation(s))]
    answer = TemporalAnswer()
    for key, sensor in sensors[page]:
        model = models.MODELS[sensor.kind]
        entity: dict[str, Any] = {
            "id": models.entity_id(model.type, sensor.id),
            "type": model.type,
        }
        for quantity, target in model.targets.items():
            if wanted is not None and target.name not in wanted:
                continue
            attribute = read.attribute(conn, key, QUANTITIES[quantity].key, target)
            if attribute is not None:
                entity[target.name] = attribute
        if len(entity) == 2:
            continue  # no instance of any attribute asked in the range: not a match
        if ld:
            entity["@context"] = list(model.context)
        answer.entities.append(entity)
    answer.content_range = read.finish(answer.entities)
    return answer


class _Reader:
    """Reads one attribute's instances; ``finish`` trims the whole answer when needed and
    returns its Content-Range (None when complete)."""

    def attribute(
        self,
        conn: psycopg.Connection[TupleRow],
        sensor_key: int,
        quantity_key: int,
        target: models.Target,
    ) -> Any:
        raise NotImplementedError

    def finish(self, entities: list[dict[str, Any]]) -> str | None:
        return None


def _aggregated_reader(
    request: Request, query: TemporalQuery, methods: list[str], window: Window
) -> _Reader:
    unknown = [m for m in methods if m not in AGGREGATES]
    if unknown:
        raise bad_request(f"unknown aggrMethods {', '.join(unknown)}; one of {AGGREGATES}")
    if query.options is not None and set(_list(query.options) or []) - {"aggregatedValues"}:
        raise bad_request("options: only aggregatedValues goes with aggrMethods")
    if query.lastN is not None:
        raise bad_request("lastN applies to raw instances, not to aggrMethods")
    period = query.aggrPeriodDuration
    if period not in _PERIODS:
        raise bad_request(f"aggrPeriodDuration is one of {', '.join(_PERIODS)}")
    resolution = _PERIODS[period]
    if query.timerel != "between" or window.start is None or window.end is None:
        raise bad_request("aggregated queries need timerel=between with timeAt and endTimeAt")
    start, end = window.start, window.end
    limit = max_span(request.app.state.settings, resolution)
    if end - start > limit:
        raise bad_request(
            f"{period} covers at most {limit.total_seconds():g} s "
            f"(URBANPULSE_API_MAX_SPAN_{resolution.value.upper()}): narrow the range"
        )
    return _Aggregated(methods, resolution, start, end)


@dataclass(frozen=True, slots=True)
class _Aggregated(_Reader):
    methods: Sequence[str]
    resolution: Resolution
    start: datetime
    end: datetime

    def attribute(
        self,
        conn: psycopg.Connection[TupleRow],
        sensor_key: int,
        quantity_key: int,
        target: models.Target,
    ) -> Any:
        statement, values = rollup_query(
            self.resolution, sensor_key, quantity_key, self.start, self.end
        )
        # Never prepared, as /readings: a generic plan would plan every partition.
        rows = conn.execute(statement, values, prepare=False).fetchall()
        if not rows:
            return None
        return _aggregated(rows, self.methods, target, self.resolution, self.end)


def _raw_reader(query: TemporalQuery, window: Window) -> _Reader:
    if query.aggrPeriodDuration is not None:
        raise bad_request("aggrPeriodDuration goes with aggrMethods")
    chosen = set(_list(query.options) or [])
    if chosen - {"temporalValues"}:
        raise bad_request("options: only temporalValues goes with raw instances")
    last_n = None
    if query.lastN is not None:
        last_n = _natural(query.lastN, "lastN", 0)
        if last_n == 0:
            raise bad_request("lastN must be at least 1")
    return _Raw(window, last_n, simplified="temporalValues" in chosen)


_RAW_SELECT = (
    "SELECT time, value FROM readings WHERE sensor_key = %(sensor)s AND quantity_key = %(q)s"
)


@dataclass(slots=True)
class _Raw(_Reader):
    """Raw instances, oldest first; with ``last_n``, the newest ``last_n`` (oldest first too).
    At most MAX_INSTANCES per attribute: past that, every attribute is cut at the same instant
    (the earliest cut of any, or with lastN the latest) so the answer is complete over the span
    its Content-Range names."""

    window: Window
    last_n: int | None
    simplified: bool
    # Where each cut attribute's kept instances end (oldest first: the last; lastN: the first).
    cuts: list[datetime] = field(default_factory=list)
    # Each attribute rendered and its instants, to trim once the cut is known.
    read: list[tuple[Any, list[datetime]]] = field(default_factory=list)
    # Instances the answer may still carry (MAX_ANSWER_INSTANCES).
    budget: int = field(default_factory=lambda: MAX_ANSWER_INSTANCES)

    def attribute(
        self,
        conn: psycopg.Connection[TupleRow],
        sensor_key: int,
        quantity_key: int,
        target: models.Target,
    ) -> Any:
        statement = _RAW_SELECT
        if self.window.start is not None:
            statement += (
                " AND time > %(start)s" if self.window.open_start else (" AND time >= %(start)s")
            )
        if self.window.end is not None:
            statement += " AND time < %(end)s"
        newest = self.last_n is not None
        bound = max(1, min(MAX_INSTANCES, self.budget))
        keep = min(self.last_n, bound) if self.last_n is not None else bound
        statement += " ORDER BY time DESC" if newest else " ORDER BY time"
        statement += " LIMIT %(limit)s"
        rows = conn.execute(
            statement,
            {
                "sensor": sensor_key,
                "q": quantity_key,
                "start": self.window.start,
                "end": self.window.end,
                "limit": keep + 1,
            },
            prepare=False,  # as /readings: a generic plan would plan every partition
        ).fetchall()
        if not rows:
            return None
        # More than asked is a cut only when the bound, not lastN, stopped the read.
        cut = len(rows) > keep and (self.last_n is None or self.last_n > keep)
        rows = rows[:keep]
        self.budget -= len(rows)
        if cut:
            self.cuts.append(rows[-1][0])
        if newest:
            rows.reverse()
        return self._render(rows, target)

    def _render(self, rows: list[tuple[Any, ...]], target: models.Target) -> Any:
        instants = [moment for moment, _ in rows]
        values = [models.attribute_value(target, float(value)) for _, value in rows]
        if self.simplified:
            attribute: Any = {
                "type": "Property",
                "values": [[v, _iso(t)] for v, t in zip(values, instants, strict=True)],
            }
        else:
            attribute = []
            for value, moment in zip(values, instants, strict=True):
                instance = {"type": "Property", "value": value, "observedAt": _iso(moment)}
                if target.unit_code is not None:
                    instance["unitCode"] = target.unit_code
                attribute.append(instance)
        self.read.append((attribute, instants))
        return attribute

    def finish(self, entities: list[dict[str, Any]]) -> str | None:
        if not self.cuts:
            return None
        if self.last_n is None:
            cut = min(self.cuts)
            kept = [t for _, instants in self.read for t in instants if t <= cut]
            first = self.window.start or min(kept)
            span = f"{_iso(first)}-{_iso(cut)}/*"
        else:
            cut = max(self.cuts)
            kept = [t for _, instants in self.read for t in instants if t >= cut]
            span = f"{_iso(max(kept))}-{_iso(cut)}/{self.last_n}"
        for attribute, instants in self.read:
            keep = [(t <= cut) if self.last_n is None else (t >= cut) for t in instants]
            if isinstance(attribute, dict):
                attribute["values"] = [
                    v for v, k in zip(attribute["values"], keep, strict=True) if k
                ]
            else:
                attribute[:] = [v for v, k in zip(attribute, keep, strict=True) if k]
        # An attribute the cut emptied goes, and an entity left with none.
        for entity in entities:
            for name in [n for n, v in entity.items() if _emptied(v)]:
                del entity[name]
        entities[:] = [e for e in entities if set(e) - {"id", "type", "@context"}]
        return f"date-time {span}"


def _emptied(value: Any) -> bool:
    if isinstance(value, list):
        return not value
    return isinstance(value, dict) and value.get("values") == []


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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
        span = [_iso(bucket), _iso(stop)]
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
