"""Subscriptions, which alert transitions they hear of, what is sent, and when to retry. Pure.

A subscription names a channel (``webhook``: an http(s) URL, signed with its ``secret``;
``email``: an address) and filters: rules (none: every rule), districts (none: every district),
a minimum severity, and the transitions it wants (raised, acknowledged, cleared). With
``escalate_after_s``, an alert still ``raised`` (nobody acknowledged it) that long after it was
raised is sent once more, marked ``escalated``, to ``escalate_to`` (same channel) or the target.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from .egress import ALLOW_HINT, EgressPolicy
from .errors import InvalidSubscription

Channel = Literal["webhook", "email"]
CHANNELS = ("webhook", "email")
SEVERITIES = ("info", "warning", "critical")
TRANSITIONS = ("raised", "acknowledged", "cleared")
ESCALATED = "escalated"
# Deliberately loose (RFC 5321 allows far more than any regex checks); the SMTP server is the
# real judge, and a refused address becomes a dead letter naming its reply.
_EMAIL = re.compile(r"^[^@\s<>,;]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
MAX_NAME = 200
# Webhooks to global addresses only: the default when no allowed networks are given.
GLOBAL_ONLY = EgressPolicy()


class Subscription(BaseModel):
    """A stored subscription (``secret`` included: only its creator is shown it)."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    channel: Channel
    target: str
    secret: str | None
    rule_ids: list[str] | None
    district_ids: list[str] | None
    min_severity: Literal["info", "warning", "critical"]
    transitions: list[str]
    escalate_after_s: float | None
    escalate_to: str | None
    enabled: bool
    created_at: datetime


SUBSCRIPTION_COLUMNS = ", ".join(Subscription.model_fields)


def check_target(field: str, channel: str, target: Any, egress: EgressPolicy = GLOBAL_ONLY) -> str:
    """``target`` if it suits ``channel``: an e-mail address, or an http(s) URL with a host,
    without credentials, whose host, when it is an address, ``egress`` lets webhooks reach."""
    if not isinstance(target, str) or not target.strip():
        raise InvalidSubscription(field, target, "not empty")
    checked: str = target.strip()
    if channel != "webhook":
        if not _EMAIL.match(checked):
            raise InvalidSubscription(field, checked, "an e-mail address like ops@city.example")
        return checked
    try:
        parts = urlsplit(checked)
        port = parts.port  # read here: out of range raises
    except ValueError:  # an unclosed [, a bracketed non-address, a port beyond 65535
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSubscription(field, checked, "an http:// or https:// URL with a host")
    if port == 0:
        raise InvalidSubscription(field, checked, "a URL whose port is 1 to 65535")
    if parts.username is not None or parts.password is not None:
        # Listed to every operator, and never sent: receivers check the signature instead.
        raise InvalidSubscription(field, "…", "a URL without user:password@ (the secret signs)")
    # Only an address written in the URL is judged now. A name is not resolved: what it resolves
    # to may change after creation, so delivery judges the address it connects to (egress.py).
    refusal = egress.host_refusal(parts.hostname)
    if refusal is not None:
        raise InvalidSubscription(
            field, checked, f"a URL webhooks may reach: {refusal} ({ALLOW_HINT})"
        )
    return checked


def _names(field: str, values: Iterable[Any] | None) -> list[str] | None:
    if values is None:
        return None
    names = list(values)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise InvalidSubscription(field, names, "a non-empty list of ids (or none: every one)")
    return sorted({n.strip() for n in names})


def check_subscription(
    fields: Mapping[str, Any], egress: EgressPolicy = GLOBAL_ONLY
) -> dict[str, Any]:
    """The columns of a new subscription from what a caller gave, checked (webhook URLs against
    ``egress``); a webhook without a secret gets a random one. Raises InvalidSubscription naming
    the first bad field."""
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise InvalidSubscription("name", name, f"1 to {MAX_NAME} characters")
    channel = fields.get("channel")
    if channel not in CHANNELS:
        raise InvalidSubscription("channel", channel, "webhook or email")
    target = check_target("target", channel, fields.get("target"), egress)
    secret = fields.get("secret")
    if channel == "webhook":
        if secret is None:
            secret = secrets.token_urlsafe(32)
        elif not isinstance(secret, str) or len(secret) < 16:
            raise InvalidSubscription("secret", "…", "at least 16 characters")
    elif secret is not None:
        raise InvalidSubscription("secret", "…", "only webhooks are signed")
    severity = fields.get("min_severity") or "info"
    if severity not in SEVERITIES:
        raise InvalidSubscription("min_severity", severity, "one of info, warning, critical")
    transitions = fields.get("transitions") or list(TRANSITIONS)
    if not all(t in TRANSITIONS for t in transitions):
        raise InvalidSubscription("transitions", transitions, "raised, acknowledged, cleared")
    escalate_after_s = fields.get("escalate_after_s")
    if escalate_after_s is not None and not (
        isinstance(escalate_after_s, int | float) and escalate_after_s > 0
    ):
        raise InvalidSubscription("escalate_after_s", escalate_after_s, "seconds, above 0")
    escalate_to = fields.get("escalate_to")
    if escalate_to is not None:
        if escalate_after_s is None:
            raise InvalidSubscription("escalate_to", escalate_to, "only with escalate_after_s")
        escalate_to = check_target("escalate_to", channel, escalate_to, egress)
    return {
        "name": name.strip(),
        "channel": channel,
        "target": target,
        "secret": secret,
        "rule_ids": _names("rule_ids", fields.get("rule_ids")),
        "district_ids": _names("district_ids", fields.get("district_ids")),
        "min_severity": severity,
        "transitions": sorted(set(transitions), key=TRANSITIONS.index),
        "escalate_after_s": None if escalate_after_s is None else float(escalate_after_s),
        "escalate_to": escalate_to,
    }


def matches(subscription: Subscription, alert: Mapping[str, Any], transition: str) -> bool:
    """Whether ``subscription`` hears of ``alert`` (its API body) going to ``transition``."""
    if not subscription.enabled:
        return False
    if transition == ESCALATED:
        if subscription.escalate_after_s is None:
            return False
    elif transition not in subscription.transitions:
        return False
    if subscription.rule_ids is not None and alert["rule_id"] not in subscription.rule_ids:
        return False
    if subscription.district_ids is not None and alert.get("district_id") not in (
        subscription.district_ids
    ):
        return False
    return SEVERITIES.index(alert["severity"]) >= SEVERITIES.index(subscription.min_severity)


def destination(subscription: Subscription, transition: str) -> str:
    if transition == ESCALATED and subscription.escalate_to:
        return subscription.escalate_to
    return subscription.target


def payload(
    alert: Mapping[str, Any], transition: str, subscription: Subscription
) -> dict[str, Any]:
    """The body a receiver gets: what happened, to which alert, for which subscription."""
    return {
        "type": f"alert.{transition}",
        "escalation": transition == ESCALATED,
        "subscription": {"id": subscription.id, "name": subscription.name},
        "alert": dict(alert),
    }


def backoff_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after the ``attempts``-th failure: base, 2x base, 4x base ... up to cap."""
    return float(min(cap_s, base_s * 2 ** max(attempts - 1, 0)))
