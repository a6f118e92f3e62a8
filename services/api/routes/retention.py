"""/v1/retention and /v1/erasures: how long data is kept, and audited erasure (issue 16).

Engineers and admins read the retention policies; only admins (``settings:write``) change them,
erase a sensor's readings and read the erasure audit. An erasure runs within the request: its
range is bounded (``URBANPULSE_ERASURE_MAX_SPAN``) and its rows go in committed batches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.kpi import erasure
from services.settings import Settings
from services.storage import erasure as stored
from services.storage import retention
from services.storage.modes import storage_mode
from services.storage.retention_policy import make_policy

from ..deps import Conn, Principal, RegistryWriter, SettingsWriter
from ..problems import Problem, responses

router = APIRouter(tags=["retention"])

Scope = Literal["default", "domain", "kind", "quantity"]
Name = Annotated[str, Path(min_length=1, max_length=64)]
Years = Annotated[int | None, Field(default=None, description="years kept; none: for ever")]


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw_days: int = Field(description="days raw readings are kept", examples=[30])
    rollup_1m_years: Years = None
    rollup_1h_years: Years = None
    rollup_1d_years: Years = None


class PolicyOut(BaseModel):
    scope: str
    name: str
    raw_days: int
    rollup_1m_years: int | None
    rollup_1h_years: int | None
    rollup_1d_years: int | None
    updated_by: str
    updated_at: datetime


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sensor_id: str = Field(min_length=1, max_length=200)
    start: datetime = Field(description="inclusive, with a UTC offset")
    end: datetime = Field(description="exclusive")
    reason: str = Field(min_length=1, max_length=2000, description="kept in the audit")
    rollups: Literal["keep", "recompute"] = "keep"


class ErasureOut(BaseModel):
    id: int
    requested_at: datetime
    actor: str
    sensor_id: str
    range_start: datetime
    range_end: datetime
    reason: str
    rollups: str
    rows_erased: int
    buckets_recomputed: int
    finished_at: datetime | None
    kpis_refreshed: bool | None = None


def actor(principal: Principal) -> str:
    return f"key:{principal.name} ({principal.key_id})"


@router.get("/retention", response_model=list[PolicyOut], responses=responses(401, 403))
def list_policies(conn: Conn, _: RegistryWriter) -> list[PolicyOut]:
    """The policies, the default first; a series falls under the most specific that names it
    (quantity, then kind, then domain, then the default)."""
    return [PolicyOut.model_validate(row) for row in retention.listed(conn)]


def _put(conn: Any, principal: Principal, scope: str, name: str, body: PolicyIn) -> PolicyOut:
    years = (body.rollup_1m_years, body.rollup_1h_years, body.rollup_1d_years)
    policy = make_policy(scope, name, body.raw_days, years)
    retention.set_policy(conn, policy, actor(principal))
    return next(
        PolicyOut.model_validate(row)
        for row in retention.listed(conn)
        if (row["scope"], row["name"]) == (policy.scope, policy.name)
    )


@router.put("/retention/default", response_model=PolicyOut, responses=responses(401, 403, 422))
def put_default(conn: Conn, principal: SettingsWriter, body: PolicyIn) -> PolicyOut:
    """Set the default policy (series no other policy names)."""
    return _put(conn, principal, "default", "", body)


@router.put(
    "/retention/{scope}/{name}", response_model=PolicyOut, responses=responses(401, 403, 422)
)
def put_policy(
    conn: Conn,
    principal: SettingsWriter,
    scope: Literal["domain", "kind", "quantity"],
    name: Name,
    body: PolicyIn,
) -> PolicyOut:
    """Set the policy of a domain, sensor kind or quantity."""
    return _put(conn, principal, scope, name, body)


@router.delete(
    "/retention/{scope}/{name}", status_code=204, responses=responses(401, 403, 404, 422)
)
def delete_policy(
    conn: Conn, _: SettingsWriter, scope: Literal["domain", "kind", "quantity"], name: Name
) -> Response:
    """Remove a policy: its series fall back to a less specific one."""
    if not retention.unset_policy(conn, scope, name):
        raise Problem(404, detail=f"no retention policy for {scope} {name!r}")
    return Response(status_code=204)


@router.post(
    "/erasures", status_code=201, response_model=ErasureOut, responses=responses(401, 403, 404, 422)
)
def post_erasure(
    request: Request, conn: Conn, principal: SettingsWriter, body: ErasureIn
) -> ErasureOut:
    """Erase a sensor's raw readings in [start, end), keeping the rollups or recomputing them
    (and the current KPI values) from what remains; audited."""
    settings: Settings = request.app.state.settings
    wanted = stored.Request(
        body.sensor_id, body.start, body.end, body.reason, body.rollups, actor(principal)
    )
    done = erasure.erase(conn, storage_mode(conn), wanted, max_span=settings.erasure_max_span)
    return ErasureOut.model_validate(done)


@router.get("/erasures", response_model=list[ErasureOut], responses=responses(401, 403, 422))
def list_erasures(
    conn: Conn,
    _: SettingsWriter,
    sensor_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ErasureOut]:
    """The erasure audit, newest first."""
    return [
        ErasureOut.model_validate(row)
        for row in stored.listed(conn, sensor_id=sensor_id, limit=limit)
    ]
