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
from pydantic import BaseModel, Field

from services.storage import quarantine
from services.storage.quarantine import QuarantineFilter

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


IncludeReplayed = Annotated[
    bool, Query(description="entries already replayed too (default: those waiting)")
]


@router.get("/quarantine", response_model=Page[QuarantineEntry], responses=responses(401, 403, 422))
def list_quarantine(
    conn: ReadConn,
    _: PayloadReader,
    *,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    gateway: Annotated[str | None, Query(max_length=64)] = None,
    sensor: Annotated[str | None, Query(max_length=128)] = None,
    since: Since = None,
    include_replayed: IncludeReplayed = False,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[QuarantineEntry]:
    """Quarantined messages and records still waiting for an operator (``include_replayed``:
    those replayed too, as the summary counts them), newest first, with a preview of each
    payload (operator, engineer and admin keys; a service key is refused with 403)."""
    which = QuarantineFilter(
        reason=reason,
        gateway=gateway,
        sensor=sensor,
        since=since,
        include_replayed=include_replayed,
    )
    entries = quarantine.list_entries(
        conn, which, limit=limit + 1, before=decode_cursor(cursor, int), preview=PREVIEW_BYTES
    )
    page, next_cursor = page_of(entries, limit, lambda e: e.id)
    items = [
        QuarantineEntry(
            id=e.id,
            received_at=e.received_at,
            topic=e.topic,
            gateway_id=e.gateway_id,
            sensor_id=e.sensor_id,
            record_index=e.record_index,
            reason=e.reason,
            detail=e.detail,
            payload_preview=e.payload.decode("utf-8", "replace"),
            payload_bytes=e.size,
            replayed_at=e.replayed_at,
        )
        for e in page
    ]
    return Page[QuarantineEntry](items=items, next_cursor=next_cursor)


@router.get("/quarantine/summary", response_model=Summary, responses=responses(401, 403, 422))
def quarantine_summary(
    conn: ReadConn,
    _: Reader,
    since: Since = None,
    include_replayed: IncludeReplayed = False,
) -> Summary:
    """How many entries per reason (optionally since a time), most frequent first: the entries
    still waiting for an operator, as ``urbanpulse quarantine list`` and ``GET /v1/quarantine``
    count them."""
    which = QuarantineFilter(since=since, include_replayed=include_replayed)
    counts = quarantine.summary(conn, which)
    reasons = [ReasonCount(reason=r, count=n) for r, n in counts.items()]
    return Summary(since=since, total=sum(counts.values()), reasons=reasons)
