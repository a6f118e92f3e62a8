"""/v1 districts, gateways and sensors: list, get, create, update, retire.

Everyone with ``read`` reads; writes need ``registry:write`` (engineers, admins). Sensors and
gateways are never deleted: ``DELETE`` retires them, like ``POST .../retire``, and the schema
says so, because their readings and KPI history keep referring to them. A reference to an
unknown district or gateway is a 422 naming the field; a second create of an id is a 409.

The routes check and answer; every statement on the registry's tables is
``services.storage.registry``'s (its ``tables``), which takes column names from the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

import psycopg
from fastapi import APIRouter, Path, Query, Response, status
from psycopg.rows import TupleRow

from gateway.kinds import KINDS, QUANTITIES
from services.storage import registry
from services.storage.registry import (
    DistrictRow,
    GatewayRow,
    check_district_fields,
    check_sensor_fields,
)

from ..deps import Conn, ReadConn, Reader, RegistryWriter
from ..models import (
    District,
    DistrictCreate,
    DistrictUpdate,
    Gateway,
    GatewayCreate,
    GatewayUpdate,
    LastReading,
    Sensor,
    SensorCreate,
    SensorDetail,
    SensorUpdate,
)
from ..pagination import Cursor, Limit, Page, decode_cursor, page_of
from ..problems import Problem, invalid, invalid_all, responses

router = APIRouter(tags=["registry"])

_READ = responses(401, 403, 422)
_WRITE = responses(401, 403, 404, 409, 422)

# Raw readings newer than this answer "last value" before the 1-minute rollup catches up; older
# ones come from the rollup's newest bucket (one index probe per quantity either way).
_RAW_WINDOW = "15 minutes"

# DELETE keeps the row (its readings and KPI history refer to it): what a client reads
# afterwards is the retired resource, not a 404. The schema says so rather than "delete".
_RETIRE_SENSOR = (
    "The same as `POST /v1/sensors/{sensor_id}/retire`: the sensor is marked retired, with the "
    "time, and answered as it now is. It is **not deleted**: its readings and KPI history keep "
    'referring to it, and a `GET` afterwards still answers 200 with `"status": "retired"`. '
    "Retiring again changes nothing."
)
_RETIRE_GATEWAY = (
    "The same as `POST /v1/gateways/{gateway_id}/retire`: the gateway is marked retired once no "
    "sensor that is not retired hangs off it (409 otherwise), and answered as it now is. It is "
    '**not deleted**: a `GET` afterwards still answers 200 with `"status": "retired"`.'
)

SensorId = Annotated[str, Path(max_length=128, examples=["wm-0001"])]
GatewayId = Annotated[str, Path(max_length=64, examples=["gw-centre-1"])]
DistrictId = Annotated[str, Path(max_length=64, examples=["centre"])]
Q = Annotated[
    str | None, Query(max_length=100, description="substring of the id (or name), any case")
]


def _one(
    conn: psycopg.Connection[TupleRow],
    table: registry.RegistryTable,
    key: str,
    columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    row = table.get(conn, key, columns)
    if row is None:
        raise Problem(404, detail=f"no {table.what} {key!r}")
    return row


def _check_references(conn: psycopg.Connection[TupleRow], values: dict[str, Any]) -> None:
    problems = registry.unknown_references(conn, [values])
    if problems:
        raise invalid_all((f"body.{column}", reason) for _, column, reason in problems)


def _insert(
    conn: psycopg.Connection[TupleRow], table: registry.RegistryTable, values: dict[str, Any]
) -> None:
    if not table.insert(conn, values):
        raise Problem(409, detail=f"{table.what} {values['id']!r} exists; PATCH it instead")


def _location(collection: str, key: str) -> str:
    # Percent-encoded: a district id may hold any character, and headers carry only Latin-1.
    return f"/v1/{collection}/{quote(key, safe='')}"


# --- districts --------------------------------------------------------------------------------


@router.get("/districts", response_model=Page[District], responses=_READ)
def list_districts(
    conn: ReadConn, _: Reader, q: Q = None, cursor: Cursor = None, limit: Limit = 100
) -> Page[District]:
    """Districts by id; ``q`` matches id or name."""
    rows = registry.districts.find(conn, q=q, after=decode_cursor(cursor, str), limit=limit + 1)
    items, next_cursor = page_of(rows, limit, lambda r: r["id"])
    return Page[District](items=[District(**r) for r in items], next_cursor=next_cursor)


@router.get(
    "/districts/{district_id}", response_model=District, responses=responses(401, 403, 404, 422)
)
def get_district(conn: ReadConn, _: Reader, district_id: DistrictId) -> District:
    return District(**_one(conn, registry.districts, district_id))


@router.post(
    "/districts", response_model=District, status_code=status.HTTP_201_CREATED, responses=_WRITE
)
def create_district(
    conn: Conn, _: RegistryWriter, body: DistrictCreate, response: Response
) -> District:
    values = DistrictRow.model_validate(body.model_dump()).model_dump()
    _insert(conn, registry.districts, values)
    response.headers["Location"] = _location("districts", body.id)
    return District(**_one(conn, registry.districts, body.id))


@router.patch("/districts/{district_id}", response_model=District, responses=_WRITE)
def update_district(
    conn: Conn, _: RegistryWriter, district_id: DistrictId, body: DistrictUpdate
) -> District:
    _one(conn, registry.districts, district_id, ["id"])
    values = body.model_dump(exclude_unset=True)
    if values.get("name", "") is None:
        raise invalid("body.name", "a district keeps a name")
    if values.get("reference", {}) is None:
        values["reference"] = {}
    values = check_district_fields(values)  # a FieldsError names each column: a 422
    registry.districts.update(conn, district_id, values)
    return District(**_one(conn, registry.districts, district_id))


# --- gateways ---------------------------------------------------------------------------------


@router.get("/gateways", response_model=Page[Gateway], responses=_READ)
def list_gateways(
    conn: ReadConn,
    _: Reader,
    *,
    district: Annotated[str | None, Query(max_length=64)] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    q: Q = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[Gateway]:
    """Gateways by id, filtered by district and status (active, retired)."""
    rows = registry.gateways.find(
        conn,
        equal={"district_id": district, "status": status_},
        q=q,
        after=decode_cursor(cursor, str),
        limit=limit + 1,
    )
    items, next_cursor = page_of(rows, limit, lambda r: r["id"])
    return Page[Gateway](items=[Gateway(**r) for r in items], next_cursor=next_cursor)


@router.get(
    "/gateways/{gateway_id}", response_model=Gateway, responses=responses(401, 403, 404, 422)
)
def get_gateway(conn: ReadConn, _: Reader, gateway_id: GatewayId) -> Gateway:
    return Gateway(**_one(conn, registry.gateways, gateway_id))


@router.post(
    "/gateways", response_model=Gateway, status_code=status.HTTP_201_CREATED, responses=_WRITE
)
def create_gateway(
    conn: Conn, _: RegistryWriter, body: GatewayCreate, response: Response
) -> Gateway:
    values = GatewayRow.model_validate(body.model_dump()).model_dump()
    _check_references(conn, values)
    _insert(conn, registry.gateways, values)
    response.headers["Location"] = _location("gateways", body.id)
    return Gateway(**_one(conn, registry.gateways, body.id))


@router.patch("/gateways/{gateway_id}", response_model=Gateway, responses=_WRITE)
def update_gateway(
    conn: Conn, _: RegistryWriter, gateway_id: GatewayId, body: GatewayUpdate
) -> Gateway:
    current = _one(conn, registry.gateways, gateway_id, ["id", "status"])
    if current["status"] == "retired":
        raise Problem(409, detail=f"gateway {gateway_id!r} is retired")
    values = body.model_dump(exclude_unset=True)
    if "metadata" in values and values["metadata"] is None:
        values["metadata"] = {}
    _check_references(conn, values)
    registry.gateways.update(conn, gateway_id, values)
    return Gateway(**_one(conn, registry.gateways, gateway_id))


def _retire_gateway(conn: psycopg.Connection[TupleRow], gateway_id: str) -> Gateway:
    _one(conn, registry.gateways, gateway_id, ["id"])
    attached = registry.retire_gateway(conn, gateway_id)
    if attached:
        raise Problem(
            409,
            detail=f"gateway {gateway_id!r} still carries {attached} sensor(s) not retired: "
            "move or retire them first",
            sensors=attached,
        )
    return Gateway(**_one(conn, registry.gateways, gateway_id))


@router.post("/gateways/{gateway_id}/retire", response_model=Gateway, responses=_WRITE)
def retire_gateway(conn: Conn, _: RegistryWriter, gateway_id: GatewayId) -> Gateway:
    """Retire a gateway (kept for the record) once no active sensor hangs off it."""
    return _retire_gateway(conn, gateway_id)


@router.delete(
    "/gateways/{gateway_id}",
    response_model=Gateway,
    responses=_WRITE,
    summary="Retire a gateway (it is not deleted)",
    description=_RETIRE_GATEWAY,
)
def delete_gateway(conn: Conn, _: RegistryWriter, gateway_id: GatewayId) -> Gateway:
    return _retire_gateway(conn, gateway_id)


# --- sensors ----------------------------------------------------------------------------------


@router.get("/sensors", response_model=Page[Sensor], responses=_READ)
def list_sensors(
    conn: ReadConn,
    _: Reader,
    *,
    district: Annotated[str | None, Query(max_length=64, examples=["centre"])] = None,
    kind: Annotated[str | None, Query(max_length=64, examples=["water_meter"])] = None,
    domain: Annotated[str | None, Query(max_length=32, examples=["water"])] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    gateway: Annotated[str | None, Query(max_length=64)] = None,
    q: Q = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[Sensor]:
    """Sensors by id, filtered by district, kind, domain, status and gateway."""
    rows = registry.sensors.find(
        conn,
        equal={
            "district_id": district,
            "kind": kind,
            "domain": domain,
            "status": status_,
            "gateway_id": gateway,
        },
        q=q,
        after=decode_cursor(cursor, str),
        limit=limit + 1,
    )
    items, next_cursor = page_of(rows, limit, lambda r: r["id"])
    return Page[Sensor](items=[Sensor(**r) for r in items], next_cursor=next_cursor)


def last_readings(
    conn: psycopg.Connection[TupleRow], sensor_key: int, kind: str
) -> list[LastReading]:
    """The newest value per quantity of the kind: raw readings of the last minutes, else the
    newest 1-minute bucket's ``last``."""
    names = list(KINDS[kind].quantities) if kind in KINDS else []
    if not names:
        return []
    rows = conn.execute(
        "SELECT k.key, coalesce(r.time, m.last_time), coalesce(r.value, m.last) "
        "FROM unnest(%(keys)s::int2[]) AS k(key) "
        "LEFT JOIN LATERAL (SELECT time, value FROM readings WHERE sensor_key = %(s)s "
        "  AND quantity_key = k.key AND time > now() - %(window)s::interval "
        "  ORDER BY time DESC LIMIT 1) r ON true "
        "LEFT JOIN LATERAL (SELECT last, last_time FROM readings_1m WHERE sensor_key = %(s)s "
        "  AND quantity_key = k.key ORDER BY bucket DESC LIMIT 1) m ON true",
        {"keys": [QUANTITIES[n].key for n in names], "s": sensor_key, "window": _RAW_WINDOW},
    ).fetchall()
    found = {key: (time, value) for key, time, value in rows}
    result = []
    for name in names:
        time, value = found.get(QUANTITIES[name].key, (None, None))
        result.append(
            LastReading(quantity=name, unit=QUANTITIES[name].unit, value=value, time=time)
        )
    return result


@router.get(
    "/sensors/{sensor_id}", response_model=SensorDetail, responses=responses(401, 403, 404, 422)
)
def get_sensor(conn: ReadConn, _: Reader, sensor_id: SensorId) -> SensorDetail:
    """A sensor with its status and the newest value of each quantity it measures."""
    return _sensor_detail(conn, sensor_id)


def _sensor_detail(conn: psycopg.Connection[TupleRow], sensor_id: str) -> SensorDetail:
    row = _one(conn, registry.sensors, sensor_id, ["key", *registry.sensors.columns])
    key = row.pop("key")
    return SensorDetail(**row, last=last_readings(conn, key, row["kind"]))


def _sensor_values(values: dict[str, Any]) -> dict[str, Any]:
    kind = values.get("kind")
    if kind is not None:
        domain = KINDS[kind].domain.value
        if values.get("domain") not in (None, domain):
            raise invalid("body.domain", f"a {kind} is in the {domain} domain")
        values["domain"] = domain
    return values


@router.post(
    "/sensors", response_model=SensorDetail, status_code=status.HTTP_201_CREATED, responses=_WRITE
)
def create_sensor(
    conn: Conn, _: RegistryWriter, body: SensorCreate, response: Response
) -> SensorDetail:
    """Register a sensor; its domain follows its kind, its interval defaults to the kind's."""
    values = _sensor_values(body.model_dump())
    values["interval_s"] = values["interval_s"] or KINDS[body.kind].interval_s
    if values["status"] == "retired":
        raise invalid("body.status", "register a sensor active, pending or in maintenance")
    _check_references(conn, values)
    _insert(conn, registry.sensors, values)
    response.headers["Location"] = _location("sensors", body.id)
    return _sensor_detail(conn, body.id)


@router.patch("/sensors/{sensor_id}", response_model=SensorDetail, responses=_WRITE)
def update_sensor(
    conn: Conn, _: RegistryWriter, sensor_id: SensorId, body: SensorUpdate
) -> SensorDetail:
    """Change some fields of a sensor; a retired sensor stays as it was."""
    current = _one(conn, registry.sensors, sensor_id, ["id", "status", "kind"])
    if current["status"] == "retired":
        raise Problem(409, detail=f"sensor {sensor_id!r} is retired")
    values = body.model_dump(exclude_unset=True)
    for column in ("kind", "status", "interval_s"):
        if column in values and values[column] is None:
            raise invalid(f"body.{column}", "cannot be null")
    if "kind" in values and values["kind"] not in KINDS:
        raise invalid("body.kind", f"unknown kind; one of {', '.join(sorted(KINDS))}")
    values = check_sensor_fields(values.get("kind") or current["kind"], values)
    if "kind" in values:
        # Null is the kind's default (migration 0003): a meter's flag does not carry over to
        # another kind.
        values.setdefault("smart", None)
    if "metadata" in values and values["metadata"] is None:
        values["metadata"] = {}
    _check_references(conn, values)
    registry.sensors.update(conn, sensor_id, _sensor_values(values))
    return _sensor_detail(conn, sensor_id)


def _retire_sensor(conn: psycopg.Connection[TupleRow], sensor_id: str) -> SensorDetail:
    _one(conn, registry.sensors, sensor_id, ["id"])
    registry.retire_sensor(conn, sensor_id)
    return _sensor_detail(conn, sensor_id)


@router.post("/sensors/{sensor_id}/retire", response_model=SensorDetail, responses=_WRITE)
def retire_sensor(conn: Conn, _: RegistryWriter, sensor_id: SensorId) -> SensorDetail:
    """Retire a sensor: it stays in the registry (its readings keep their meaning), marked
    retired with the time; retiring again changes nothing."""
    return _retire_sensor(conn, sensor_id)


@router.delete(
    "/sensors/{sensor_id}",
    response_model=SensorDetail,
    responses=_WRITE,
    summary="Retire a sensor (it is not deleted)",
    description=_RETIRE_SENSOR,
)
def delete_sensor(conn: Conn, _: RegistryWriter, sensor_id: SensorId) -> SensorDetail:
    return _retire_sensor(conn, sensor_id)
