"""/v1/notifications: alert subscriptions (webhooks, e-mail) and dead letters (issue 16).

Operators and admins (``alerts:write``) manage who hears of which alerts and replay what could
not be delivered; the notifier (``urbanpulse notify run``) does the sending. A webhook's secret
is shown once, in the answer that creates it: receivers verify ``X-UrbanPulse-Signature`` with it
(services/notify/signing.py says how). The notifications package's errors (a bad field: 422
naming it; an unknown subscription or dead letter: 404) pass through to the app's handler.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.notify import manage
from services.notify.model import Subscription

from ..deps import AlertWriter, Conn
from ..problems import responses

router = APIRouter(tags=["notifications"])

Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Transition = Literal["raised", "acknowledged", "cleared"]


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["water team on-call"])
    channel: Literal["webhook", "email"]
    target: str = Field(
        max_length=2000,
        description="the webhook URL or the e-mail address",
        examples=["https://ops.city.example/hooks/urbanpulse"],
    )
    rule_ids: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=100, description="none: every rule"
    )
    district_ids: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=100, description="none: every district"
    )
    min_severity: Literal["info", "warning", "critical"] = "info"
    transitions: list[Transition] | None = Field(default=None, description="none: all three")
    escalate_after_s: float | None = Field(
        default=None, gt=0, le=30 * 86400, description="unacknowledged this long: escalate"
    )
    escalate_to: str | None = Field(
        default=None, max_length=2000, description="where escalations go; none: the target"
    )
    secret: str | None = Field(
        default=None, min_length=16, max_length=200, description="webhooks; none: a random one"
    )


class SubscriptionOut(BaseModel):
    """A subscription as listed: without its secret."""

    id: int
    name: str
    channel: Literal["webhook", "email"]
    target: str
    rule_ids: list[str] | None
    district_ids: list[str] | None
    min_severity: str
    transitions: list[str]
    escalate_after_s: float | None
    escalate_to: str | None
    enabled: bool
    created_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str | None = Field(description="the webhook's HMAC key: shown this once")


class DeadLetter(BaseModel):
    id: int
    alert_id: int
    transition: str
    subscription_id: int
    channel: str
    target: str
    attempts: int
    last_error: str | None
    created_at: datetime
    dead_at: datetime | None
    payload: dict[str, Any]


def _out(sub: Subscription) -> dict[str, Any]:
    return sub.model_dump(exclude={"secret"})


@router.post(
    "/notifications/subscriptions",
    status_code=201,
    response_model=SubscriptionCreated,
    responses=responses(401, 403, 422),
)
def add_subscription(
    request: Request, conn: Conn, _: AlertWriter, body: SubscriptionIn
) -> SubscriptionCreated:
    """Subscribe a webhook or an e-mail address to alerts, filtered by rule, district, severity.
    A webhook URL naming an address webhooks may not reach (loopback, private, link-local, cloud
    metadata, outside URBANPULSE_WEBHOOK_ALLOW_NETWORKS) is refused here; a name is judged at
    delivery, on the addresses it resolves to then."""
    egress = manage.egress_of(request.app.state.settings)
    sub = manage.add_subscription(conn, body.model_dump(), egress=egress)
    return SubscriptionCreated(**_out(sub), secret=sub.secret)


@router.get(
    "/notifications/subscriptions",
    response_model=list[SubscriptionOut],
    responses=responses(401, 403),
)
def list_subscriptions(conn: Conn, _: AlertWriter) -> list[SubscriptionOut]:
    return [SubscriptionOut(**_out(sub)) for sub in manage.list_subscriptions(conn)]


@router.delete(
    "/notifications/subscriptions/{subscription_id}",
    status_code=204,
    responses=responses(401, 403, 404, 422),
)
def remove_subscription(conn: Conn, _: AlertWriter, subscription_id: Id) -> Response:
    """Remove a subscription with its pending and dead notifications."""
    manage.remove_subscription(conn, subscription_id)
    return Response(status_code=204)


@router.get(
    "/notifications/dead-letters",
    response_model=list[DeadLetter],
    responses=responses(401, 403, 422),
)
def dead_letters(
    conn: Conn, _: AlertWriter, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeadLetter]:
    """Notifications out of attempts, newest first, with the receiver's last answer."""
    return [DeadLetter.model_validate(row) for row in manage.dead_letters(conn, limit)]


@router.post(
    "/notifications/dead-letters/{notification_id}/replay",
    response_model=DeadLetter,
    responses=responses(401, 403, 404, 422),
)
def replay(conn: Conn, _: AlertWriter, notification_id: Id) -> DeadLetter:
    """Queue a dead letter again with fresh attempts; the notifier's next pass sends it."""
    row = manage.replay(conn, notification_id)
    return DeadLetter.model_validate(row)
