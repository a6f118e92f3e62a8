"""What the CLI and the API do with subscriptions and dead letters, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from services.settings import Settings
from services.storage import notifications as store

from .channels import SmtpConfig
from .egress import EgressPolicy
from .errors import InvalidSubscription, NotificationNotFound, SubscriptionNotFound
from .model import Subscription, check_subscription
from .notifier import NotifierConfig


def add_subscription(
    conn: psycopg.Connection[Any], fields: Mapping[str, Any], *, egress: EgressPolicy
) -> Subscription:
    """Check and store a subscription; an unknown rule is refused (``rule_ids``), and so is a
    webhook URL naming an address ``egress`` keeps webhooks from (the API and the CLI pass
    :func:`egress_of` their settings, as the notifier does)."""
    columns = check_subscription(fields, egress)
    if columns["rule_ids"] is not None:
        unknown = sorted(set(columns["rule_ids"]) - store.existing_rules(conn, columns["rule_ids"]))
        if unknown:
            raise InvalidSubscription("rule_ids", unknown, "ids of existing alert rules")
    with conn.transaction():
        return Subscription.model_validate(store.add_subscription(conn, columns))


def list_subscriptions(conn: psycopg.Connection[Any]) -> list[Subscription]:
    return [Subscription.model_validate(row) for row in store.subscriptions(conn)]


def remove_subscription(conn: psycopg.Connection[Any], id: int) -> None:
    with conn.transaction():
        if not store.remove_subscription(conn, id):
            raise SubscriptionNotFound(id)


def dead_letters(conn: psycopg.Connection[Any], limit: int = 100) -> list[dict[str, Any]]:
    return store.dead_letters(conn, limit)


def replay(conn: psycopg.Connection[Any], id: int) -> dict[str, Any]:
    """Queue a dead letter again (attempts reset); the notifier's next pass sends it."""
    with conn.transaction():
        row = store.replay(conn, id)
    if row is None:
        raise NotificationNotFound(id)
    return row


def config_from(settings: Settings) -> NotifierConfig:
    smtp = None
    if settings.smtp_host:
        smtp = SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
            timeout_s=settings.notify_timeout.total_seconds(),
        )
    return NotifierConfig(
        max_attempts=settings.notify_max_attempts,
        backoff_base_s=settings.notify_backoff_base.total_seconds(),
        backoff_cap_s=settings.notify_backoff_cap.total_seconds(),
        timeout_s=settings.notify_timeout.total_seconds(),
        smtp=smtp,
        egress=egress_of(settings),
    )


def egress_of(settings: Settings) -> EgressPolicy:
    """Where webhooks may connect: global addresses and URBANPULSE_WEBHOOK_ALLOW_NETWORKS."""
    return EgressPolicy(tuple(settings.webhook_allow_networks))
