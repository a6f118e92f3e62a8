"""/v1/alerts and /v1/alert-rules: list and filter alerts, acknowledge and clear them, read the
rules that raise them.

The alert engine's errors (unknown alert or rule: 404; a transition its state refuses: 409 with
the ``state``; a bad filter: 422) pass through: the app's handler answers them as they describe
themselves (``services.kpi.alerts.errors``).

An operator acknowledges (takes in hand, with a comment) or clears an alert; the API records who
as the key's name (its holder, as the admin named it). Never the key's id: every reader sees an
alert, and an id is half of a credential (issue 11). The monitor raises and clears alerts by
itself as conditions come and go (``cleared_by`` null).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, Field

from services.kpi.alerts import lifecycle
from services.kpi.alerts.model import Alert
from services.kpi.alerts.rules import Rule, get_rule, load_rules

from ..deps import AlertWriter, Conn, Principal, ReadConn, Reader
from ..models import Instant
from ..pagination import MAX_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor, page_of
from ..problems import responses

router = APIRouter(tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the alert's id")]


class Action(BaseModel):
    comment: str | None = Field(default=None, max_length=2000, examples=["crew sent to valve V-12"])


def _who(principal: Principal) -> str:
    return principal.name


@router.get("/alerts", response_model=Page[Alert], responses=responses(401, 403, 422))
def list_alerts(
    conn: ReadConn,
    _: Reader,
    *,
    state: Annotated[
        Literal["open", "raised", "acknowledged", "cleared"] | None,
        Query(description="open = raised or acknowledged"),
    ] = None,
    severity: Annotated[Literal["info", "warning", "critical"] | None, Query()] = None,
    district: Annotated[str | None, Query(max_length=64)] = None,
    domain: Annotated[str | None, Query(max_length=32)] = None,
    rule: Annotated[str | None, Query(max_length=64, description="rule id")] = None,
    since: Annotated[Instant | None, Query(description="raised at or after")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[Alert]:
    """Alerts, newest first, filtered by state, severity, district, domain, rule and time."""
    after = decode_cursor(cursor, int)
    rows = lifecycle.list_alerts(
        conn,
        state=state,
        severity=severity,
        district=district,
        domain=domain,
        rule_id=rule,
        since=since,
        # One more than the page tells whether another follows; the engine lists at most
        # MAX_LIMIT, so a full page of that size ends with a cursor (maybe to an empty page).
        limit=min(limit + 1, MAX_LIMIT),
        after_id=after,
    )
    items, next_cursor = page_of(rows, limit, lambda a: a.id)
    if next_cursor is None and len(rows) == MAX_LIMIT:
        next_cursor = encode_cursor(rows[-1].id)
    return Page[Alert](items=items, next_cursor=next_cursor)


@router.get("/alerts/{alert_id}", response_model=Alert, responses=responses(401, 403, 404, 422))
def get_alert(conn: ReadConn, _: Reader, alert_id: AlertId) -> Alert:
    """One alert with its whole lifecycle (raised, acknowledged, cleared: when, who, why)."""
    return lifecycle.get_alert(conn, alert_id)


def _act(conn: Conn, action: str, alert_id: int, principal: Principal, body: Action) -> Alert:
    step = lifecycle.acknowledge if action == "acknowledge" else lifecycle.clear
    return step(conn, alert_id, _who(principal), body.comment)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=Alert,
    responses=responses(401, 403, 404, 409, 422),
)
def acknowledge(
    conn: Conn,
    principal: AlertWriter,
    alert_id: AlertId,
    body: Annotated[Action, Body()] = Action(),  # noqa: B008 (an immutable default body)
) -> Alert:
    """Take a raised alert in hand (409 when it is already acknowledged or cleared)."""
    return _act(conn, "acknowledge", alert_id, principal, body)


@router.post(
    "/alerts/{alert_id}/clear",
    response_model=Alert,
    responses=responses(401, 403, 404, 409, 422),
)
def clear(
    conn: Conn,
    principal: AlertWriter,
    alert_id: AlertId,
    body: Annotated[Action, Body()] = Action(),  # noqa: B008 (an immutable default body)
) -> Alert:
    """Clear an open alert by hand (409 when already cleared). If its condition still holds,
    the monitor raises a new one."""
    return _act(conn, "clear", alert_id, principal, body)


@router.get("/alert-rules", response_model=list[Rule], responses=responses(401, 403))
def list_rules(conn: ReadConn, _: Reader) -> list[Rule]:
    """The alert rules: the defaults (builtin) and the city's own. A row broken by hand in the
    table is left out here (``urbanpulse alerts rules`` names it), not a 500 for everyone."""
    return load_rules(conn, invalid=[])


@router.get("/alert-rules/{rule_id}", response_model=Rule, responses=responses(401, 403, 404, 422))
def get_alert_rule(conn: ReadConn, _: Reader, rule_id: Annotated[str, Path(max_length=64)]) -> Rule:
    """One alert rule."""
    return get_rule(conn, rule_id)
