"""The notifier loop: alert events -> outbox rows -> deliveries, never inside the evaluation.

One pass (:meth:`Notifier.run_once`) does three things, each in its own short transactions:

1. enqueue: the ``alert`` events after the cursor, one outbox row per matching subscription,
   and the cursor moved past them, atomically;
2. escalate: one ``escalated`` row per alert still unacknowledged past a subscription's delay;
3. deliver: each due row claimed alone (``FOR UPDATE SKIP LOCKED``), sent, and marked sent, or
   failed with a retry after an exponential backoff, or dead after the last attempt.

Events are pruned after their retention (``URBANPULSE_EVENTS_RETENTION``): a notifier stopped
for longer than that misses the transitions of the gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from services.kpi.alerts.model import alert_from_row
from services.storage import events
from services.storage import notifications as store
from services.storage.urls import libpq_url

from . import channels
from .egress import EgressPolicy, Resolver, system_resolver
from .errors import DeliveryFailed
from .model import ESCALATED, Subscription, backoff_s, destination, matches, payload

log = logging.getLogger(__name__)

CURSOR = "notifier"


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    max_attempts: int = 6
    backoff_base_s: float = 30.0
    backoff_cap_s: float = 3600.0
    timeout_s: float = 10.0
    smtp: channels.SmtpConfig | None = None
    # Where webhooks may connect: global addresses and these networks (egress.py).
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    # How webhook hosts are resolved (under each delivery's deadline): the system's resolver.
    resolver: Resolver = system_resolver
    # Events read per transaction: bounds a pass's first transaction after a long stop.
    batch: int = 500


@dataclass(slots=True)
class PassResult:
    enqueued: int = 0
    escalated: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def _subscriptions(conn: psycopg.Connection[Any]) -> list[Subscription]:
    return [
        Subscription.model_validate(row) for row in store.subscriptions(conn, enabled_only=True)
    ]


class Notifier:
    """The notifier over one database connection (autocommit; it opens its own transactions)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        config: NotifierConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.conn = conn
        self.config = config
        self.clock = clock

    def enqueue(self, limit: int | None = None) -> int:
        """Outbox rows for the alert events after the cursor (at most ``limit`` events)."""
        added = 0
        while True:
            with self.conn.transaction():
                after = store.cursor(self.conn, CURSOR)
                batch = min(self.config.batch, limit) if limit is not None else self.config.batch
                page = events.read_after(self.conn, after, types=["alert"], limit=batch)
                if not page:
                    return added
                subscriptions = _subscriptions(self.conn)
                rows = []
                for event in page:
                    alert = event.data
                    transition = str(alert["state"])
                    for sub in subscriptions:
                        # A new subscription hears of what happens after it was made.
                        if event.time >= sub.created_at and matches(sub, alert, transition):
                            rows.append(self._row(sub, alert, transition, event.id))
                added += store.enqueue(self.conn, rows, self.clock())
                store.move_cursor(self.conn, CURSOR, page[-1].id)
            if limit is not None:
                limit -= len(page)
                if limit <= 0:
                    return added

    def escalate(self) -> int:
        with self.conn.transaction():
            subscriptions = {sub.id: sub for sub in _subscriptions(self.conn)}
            rows = []
            for raw, subscription_id in store.unescalated(self.conn, self.clock()):
                sub = subscriptions[subscription_id]
                alert = alert_from_row(raw).model_dump(mode="json")
                if matches(sub, alert, ESCALATED):
                    rows.append(self._row(sub, alert, ESCALATED, None))
            return store.enqueue(self.conn, rows, self.clock())

    @staticmethod
    def _row(
        sub: Subscription, alert: dict[str, Any], transition: str, event_id: int | None
    ) -> dict[str, Any]:
        return {
            "alert_id": alert["id"],
            "transition": transition,
            "event_id": event_id,
            "subscription_id": sub.id,
            "channel": sub.channel,
            "target": destination(sub, transition),
            "payload": payload(alert, transition, sub),
        }

    def deliver(self, result: PassResult | None = None, limit: int | None = None) -> PassResult:
        """Send due rows one by one, each in the transaction that claims it."""
        result = result or PassResult()
        # Every subscription's, enabled or not: a row enqueued before a pause still goes out.
        secrets = {row["id"]: row["secret"] for row in store.subscriptions(self.conn)}
        done = 0
        while limit is None or done < limit:
            with self.conn.transaction():
                now = self.clock()
                claimed = store.claim_due(self.conn, now, 1)
                if not claimed:
                    return result
                row = claimed[0]
                try:
                    self._send(row, secrets.get(row["subscription_id"]), now)
                except DeliveryFailed as exc:
                    attempts = row["attempts"] + 1
                    last = attempts >= self.config.max_attempts
                    retry_at = None if last else now + timedelta(seconds=self._backoff(attempts))
                    store.mark_failed(self.conn, row["id"], exc.reason, retry_at=retry_at, now=now)
                    result.failed += 1
                    result.dead += last
                    result.errors.append(exc.reason)
                    log.warning("notification %s failed (attempt %s): %s", row["id"], attempts, exc)
                else:
                    store.mark_sent(self.conn, row["id"], now)
                    result.sent += 1
            done += 1
        return result

    def _backoff(self, attempts: int) -> float:
        return backoff_s(attempts, self.config.backoff_base_s, self.config.backoff_cap_s)

    def _send(self, row: dict[str, Any], secret: str | None, now: datetime) -> None:
        if row["channel"] == "webhook":
            if secret is None:
                raise DeliveryFailed("the subscription is disabled or gone")
            channels.post_webhook(
                row["target"],
                secret,
                row["payload"],
                delivery_id=row["id"],
                now=now.timestamp(),
                timeout_s=self.config.timeout_s,
                policy=self.config.egress,
                resolver=self.config.resolver,
            )
        elif self.config.smtp is None:
            raise DeliveryFailed("no SMTP server configured (URBANPULSE_SMTP_HOST)")
        else:
            channels.send_email(
                self.config.smtp, row["target"], row["payload"], delivery_id=row["id"]
            )

    def run_once(self) -> PassResult:
        result = PassResult(enqueued=self.enqueue())
        result.escalated = self.escalate()
        return self.deliver(result)

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Passes every ``interval_s`` until ``stop`` is set; a failed pass is logged, not fatal."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = self.run_once()
                if result.enqueued or result.sent or result.failed:
                    log.info(
                        "notify: %s enqueued, %s escalated, %s sent, %s failed, %s dead",
                        result.enqueued,
                        result.escalated,
                        result.sent,
                        result.failed,
                        result.dead,
                    )
            except psycopg.Error:
                log.exception("notify pass failed; retrying next interval")
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))


def start_thread(
    database_url: str, config: NotifierConfig, interval_s: float
) -> Callable[[], None]:
    """Run the notifier in a daemon thread of this process (``urbanpulse up``); returns the
    function that stops it. Its own connection: sending never holds the monitor's."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
                    Notifier(conn, config).run(stop, interval_s)
            except psycopg.OperationalError:
                log.exception("notifier lost its database; reconnecting")
                stop.wait(interval_s)

    thread = threading.Thread(target=run, name="notifier", daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(config.timeout_s + 5)

    return halt
