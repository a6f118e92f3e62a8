"""The notifier against real receivers: signed webhooks, retries with backoff, dead letters and
replay, e-mail through a real SMTP server, escalation, filters, and exactly once across restarts."""

from __future__ import annotations

import time
from collections import Counter
from email import message_from_bytes
from typing import Any

import psycopg
import pytest

from services.kpi.alerts import acknowledge, clear
from services.notify import manage
from services.notify.notifier import start_thread
from services.storage import notifications as store
from services.storage.urls import libpq_url

from .conftest import (
    CONFIG,
    GATEWAY_RULE,
    KPI_RULE,
    LOOPBACK,
    Clock,
    Conn,
    notifier,
    raise_alert,
)


def webhook(conn: Conn, receiver: Any, **fields: Any) -> Any:
    sub = manage.add_subscription(
        conn,
        {"name": "ops", "channel": "webhook", "target": receiver.url, **fields},
        egress=LOOPBACK,  # the receivers listen on loopback
    )
    receiver.secret = sub.secret
    return sub


def test_a_transition_reaches_a_webhook_signed(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    sub = webhook(conn, receiver)
    alert = raise_alert(conn)

    result = notifier(conn, clock).run_once()

    assert (result.enqueued, result.sent, result.failed) == (1, 1, 0)
    [delivery] = receiver.requests
    assert delivery.verified
    assert delivery.headers["X-UrbanPulse-Event"] == "alert.raised"
    body = delivery.json
    assert body["type"] == "alert.raised"
    assert body["escalation"] is False
    assert body["subscription"] == {"id": sub.id, "name": "ops"}
    assert body["alert"]["id"] == alert.id
    assert body["alert"]["state"] == "raised"

    acknowledge(conn, alert.id, by="ana", comment="on it")
    clear(conn, alert.id, by="ana")
    notifier(conn, clock).run_once()
    assert [d.json["type"] for d in receiver.requests] == [
        "alert.raised",
        "alert.acknowledged",
        "alert.cleared",
    ]
    assert all(d.verified for d in receiver.requests)
    assert receiver.requests[1].json["alert"]["acknowledged_by"] == "ana"


def test_a_tampered_body_fails_the_receivers_check(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    webhook(conn, receiver)
    raise_alert(conn)
    receiver.secret = "not-the-subscriptions-secret"  # the receiver holds a wrong key

    notifier(conn, clock).run_once()

    assert [d.verified for d in receiver.requests] == [False]


def test_a_failing_receiver_is_retried_with_exponential_backoff(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    receiver.fail_next = 2
    webhook(conn, receiver)
    alert = raise_alert(conn)
    loop = notifier(conn, clock, max_attempts=5)

    assert loop.run_once().failed == 1
    [row] = store.notifications_of(conn, alert.id)
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "pending",
        1,
        f"HTTP 500 from {receiver.url}",
    )
    assert (row["next_attempt_at"] - clock.now).total_seconds() == pytest.approx(30)

    clock.advance(29)
    assert loop.run_once().failed == 0  # not due yet: nothing tried
    assert len(receiver.requests) == 1

    clock.advance(1)
    assert loop.run_once().failed == 1
    [row] = store.notifications_of(conn, alert.id)
    assert (row["next_attempt_at"] - clock.now).total_seconds() == pytest.approx(60)

    clock.advance(60)
    assert loop.run_once().sent == 1
    [row] = store.notifications_of(conn, alert.id)
    assert (row["status"], row["attempts"]) == ("sent", 3)
    # The same delivery each time: a receiver can tell a retry from a new notification.
    assert len({d.headers["X-UrbanPulse-Delivery"] for d in receiver.requests}) == 1
    assert len(receiver.delivered) == 1


def test_out_of_attempts_is_a_dead_letter_that_replays_once_the_receiver_recovers(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    receiver.always_fail = True
    webhook(conn, receiver)
    alert = raise_alert(conn)
    loop = notifier(conn, clock)  # max_attempts=3

    for _ in range(3):
        loop.run_once()
        clock.advance(600)
    assert len(receiver.requests) == 3
    [dead] = manage.dead_letters(conn)
    assert (dead["alert_id"], dead["status"], dead["attempts"]) == (alert.id, "dead", 3)
    assert dead["last_error"] == f"HTTP 500 from {receiver.url}"
    loop.run_once()
    assert len(receiver.requests) == 3  # dead letters are not retried by themselves

    receiver.always_fail = False
    manage.replay(conn, dead["id"])
    assert loop.run_once().sent == 1
    assert manage.dead_letters(conn) == []
    assert len(receiver.delivered) == 1
    assert receiver.delivered[0].verified


def test_an_alert_reaches_an_email_address_through_smtp(
    conn: Conn, clock: Clock, smtp_server: Any
) -> None:
    config, mailbox = smtp_server
    manage.add_subscription(
        conn,
        {"name": "water team", "channel": "email", "target": "water@city.example"},
        egress=LOOPBACK,
    )
    alert = raise_alert(conn, severity="critical", subject="gw-7")

    result = notifier(conn, clock, smtp=config).run_once()

    assert result.sent == 1
    [envelope] = mailbox.messages
    assert envelope.rcpt_tos == ["water@city.example"]
    assert envelope.mail_from == "urbanpulse@city.example"
    message = message_from_bytes(envelope.content)
    assert message["Subject"] == f"[critical] {GATEWAY_RULE} raised: gw-7"
    text = message.get_payload(decode=True).decode()
    assert alert.message in text
    assert f"alert {alert.id}: raised" in text


def test_email_without_an_smtp_server_is_a_failure_not_a_silent_drop(
    conn: Conn, clock: Clock
) -> None:
    manage.add_subscription(
        conn, {"name": "team", "channel": "email", "target": "team@city.example"}, egress=LOOPBACK
    )
    alert = raise_alert(conn)
    notifier(conn, clock, max_attempts=1).run_once()
    [row] = store.notifications_of(conn, alert.id)
    assert row["status"] == "dead"
    assert "URBANPULSE_SMTP_HOST" in row["last_error"]


def test_an_unacknowledged_alert_escalates_once_to_the_second_target(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    first, second = receiver_factory(), receiver_factory()
    sub = webhook(conn, first, escalate_after_s=60, escalate_to=second.url)
    second.secret = sub.secret
    unhandled = raise_alert(conn, subject="gw-1")
    handled = raise_alert(conn, subject="gw-2")
    acknowledge(conn, handled.id, by="ana")
    clock.advance(30)
    loop = notifier(conn, clock)

    assert loop.run_once().escalated == 0
    assert second.requests == []

    clock.advance(31)
    assert loop.run_once().escalated == 1
    [escalation] = second.requests
    assert escalation.verified
    assert escalation.json["type"] == "alert.escalated"
    assert escalation.json["escalation"] is True
    assert escalation.json["alert"]["id"] == unhandled.id

    clock.advance(3600)
    assert loop.run_once().escalated == 0  # once per alert and subscription
    assert len(second.requests) == 1
    # The first target heard of the raises and the acknowledgement only.
    assert sorted(d.json["type"] for d in first.requests) == [
        "alert.acknowledged",
        "alert.raised",
        "alert.raised",
    ]


def test_subscriptions_hear_only_their_rules_districts_and_severities(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    by_rule, by_district, critical, everything = (receiver_factory() for _ in range(4))
    webhook(conn, by_rule, rule_ids=[KPI_RULE])
    webhook(conn, by_district, district_ids=["north"])
    webhook(conn, critical, min_severity="critical")
    webhook(conn, everything)
    a = raise_alert(conn, GATEWAY_RULE, "gw-1", district="centre", severity="warning")
    b = raise_alert(conn, KPI_RULE, "kpi-1", district="centre", severity="info")
    c = raise_alert(conn, GATEWAY_RULE, "gw-2", district="north", severity="critical")
    d = raise_alert(conn, GATEWAY_RULE, "gw-3", district=None, severity="warning")

    notifier(conn, clock).run_once()

    def heard(receiver: Any) -> list[int]:
        return sorted(r.json["alert"]["id"] for r in receiver.requests)

    assert heard(by_rule) == [b.id]
    assert heard(by_district) == [c.id]
    assert heard(critical) == [c.id]
    assert heard(everything) == sorted([a.id, b.id, c.id, d.id])


def test_transitions_filter(conn: Conn, clock: Clock, receiver_factory: Any) -> None:
    receiver = receiver_factory()
    webhook(conn, receiver, transitions=["cleared"])
    alert = raise_alert(conn)
    acknowledge(conn, alert.id, by="ana")
    clear(conn, alert.id, by="ana")
    notifier(conn, clock).run_once()
    assert [r.json["type"] for r in receiver.requests] == ["alert.cleared"]


def test_a_subscription_hears_nothing_from_before_it_was_made(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    raise_alert(conn, subject="old")
    webhook(conn, receiver)
    new = raise_alert(conn, subject="new")
    notifier(conn, clock).run_once()
    assert [r.json["alert"]["id"] for r in receiver.requests] == [new.id]


def test_each_transition_is_sent_once_across_notifier_restarts(
    notify_url: str, conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    webhook(conn, receiver)
    alerts = [raise_alert(conn, subject=f"gw-{i}") for i in range(5)]
    for alert in alerts[:3]:
        acknowledge(conn, alert.id, by="ana")
    expected = Counter({(a.id, "alert.raised"): 1 for a in alerts}) + Counter(
        {(a.id, "alert.acknowledged"): 1 for a in alerts[:3]}
    )

    # A first notifier reads part of the events, delivers part of its outbox, and dies.
    with psycopg.connect(libpq_url(notify_url), autocommit=True) as first:
        loop = notifier(first, clock)
        assert loop.enqueue(limit=4) == 4
        assert loop.deliver(limit=2).sent == 2
    assert len(receiver.requests) == 2

    # A second one starts where the first stopped.
    with psycopg.connect(libpq_url(notify_url), autocommit=True) as second:
        assert notifier(second, clock).run_once().enqueued == 4
    # And one that lost its cursor (read every event again) enqueues nothing twice.
    store.move_cursor(conn, "notifier", 0)
    result = notifier(conn, clock).run_once()
    assert (result.enqueued, result.sent) == (0, 0)

    got = Counter((r.json["alert"]["id"], r.json["type"]) for r in receiver.requests)
    assert got == expected


def test_the_thread_of_urbanpulse_up_delivers(
    notify_url: str, conn: Conn, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    webhook(conn, receiver)
    halt = start_thread(notify_url, CONFIG, interval_s=0.05)
    try:
        alert = raise_alert(conn)
        deadline = time.monotonic() + 30  # a bound on the wait, not a measured time
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        halt()
    assert [(r.json["alert"]["id"], r.verified) for r in receiver.requests] == [(alert.id, True)]
