"""GET /v1/quarantine and /v1/quarantine/summary: what ingestion could not store, read-only.

Payloads can be up to the broker's 1 MiB and binary, so a list shows a text preview of the
first bytes (invalid UTF-8 replaced) and the full length; the raw bytes stay with
``urbanpulse quarantine show``. Newest first, keyset-paginated by id.

The list carries what gateways sent, raw: operators and engineers (and admins) read it, not
service keys, which dashboards and exporters hold (issue 11). The summary (counts by reason)
carries no payload, and every reader sees it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from services.storage import quarantine

from ..deps import Principal, ReadConn, Reader
from ..models import Instant
from ..pagination import Cursor, Limit, Page, decode_cursor, page_of
from ..problems import Problem, responses

router = APIRouter(tags=["quarantine"])

PREVIEW_BYTES = 512
# The roles that read payloads: the people who act on what the city sends. (A permission of its
# own in services.api.keys would say the same; until then, the roles are named here.)
PAYLOAD_ROLES = frozenset({"operator", "engineer", "admin"})


async def _payload_reader(principal: Reader) -> Principal:
    if principal.role not in PAYLOAD_ROLES:
        raise Problem(
            403,
            detail=f"quarantined payloads are for {', '.join(sorted(PAYLOAD_ROLES))} keys, "
            f"not {principal.role!r}",
            role=principal.role,
        )
    return principal


PayloadReader = Annotated[Principal, Depends(_payload_reader)]


class QuarantineEntry(BaseModel):
    id: int
    received_at: datetime
    topic: str = Field(examples=["ssc/v1/gw-centre-1/up"])
    gateway_id: str | None
    sensor_id: str | None
    record_index: int | None = Field(description="index in the pack; null: the whole message")
    reason: str = Field(examples=["unknown_sensor"])
    detail: str
    payload_preview: str = Field(description=f"the first {PREVIEW_BYTES} bytes as text")
    payload_bytes: int
    replayed_at: datetime | None


class ReasonCount(BaseModel):
    reason: str = Field(examples=["out_of_bounds"])
    count: int = Field(examples=[12])


class Summary(BaseModel):
    since: datetime | None
    total: int
    reasons: list[ReasonCount]


Since = Annotated[Instant | None, Query(description="received at or after")]


@router.get("/quarantine", response_model=Page[QuarantineEntry], responses=responses(401, 403, 422))
def list_quarantine(
    conn: ReadConn,
    _: PayloadReader,
    *,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    gateway: Annotated[str | None, Query(max_length=64)] = None,
    sensor: Annotated[str | None, Query(max_length=128)] = None,
    since: Since = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[QuarantineEntry]:
    """Quarantined messages and records, newest first, with a preview of each payload
    (operator, engineer and admin keys; a service key is refused with 403)."""
    before = decode_cursor(cursor, int)
    query = (
        "SELECT q.id, q.received_at, q.topic, q.gateway_id, q.sensor_id, q.record_index, "
        "q.reason, q.detail, substring(m.payload FROM 1 FOR %(preview)s) AS preview, "
        "m.bytes AS payload_bytes, q.replayed_at "
        # A message's bytes are stored once, in quarantine_messages, for all its entries.
        "FROM quarantine q JOIN quarantine_messages m ON m.id = q.message_id "
        "WHERE (%(reason)s::text IS NULL OR q.reason = %(reason)s) "
        "AND (%(gateway)s::text IS NULL OR q.gateway_id = %(gateway)s) "
        "AND (%(sensor)s::text IS NULL OR q.sensor_id = %(sensor)s) "
        "AND (%(since)s::timestamptz IS NULL OR q.received_at >= %(since)s) "
        "AND (%(before)s::bigint IS NULL OR q.id < %(before)s) "
        "ORDER BY q.id DESC LIMIT %(limit)s"
    )
    params = {
        "preview": PREVIEW_BYTES,
        "reason": reason,
        "gateway": gateway,
        "sensor": sensor,
        "since": since,
        "before": before,
        "limit": limit + 1,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    page, next_cursor = page_of(rows, limit, lambda r: r["id"])
    items = [
        QuarantineEntry(**r, payload_preview=bytes(r.pop("preview")).decode("utf-8", "replace"))
        for r in page
    ]
    return Page[QuarantineEntry](items=items, next_cursor=next_cursor)


@router.get("/quarantine/summary", response_model=Summary, responses=responses(401, 403, 422))
def quarantine_summary(
    conn: ReadConn,
    _: Reader,
    since: Since = None,
    include_replayed: Annotated[
        bool, Query(description="count entries already replayed too (default: those waiting)")
    ] = False,
) -> Summary:
    """How many entries per reason (optionally since a time), most frequent first: the entries
    still waiting for an operator, as ``urbanpulse quarantine list`` counts them."""
    counts = quarantine.summary(conn, since=since, include_replayed=include_replayed)
    reasons = [ReasonCount(reason=r, count=n) for r, n in counts.items()]
    return Summary(since=since, total=sum(counts.values()), reasons=reasons)
