"""The pure parts: the signature, subscription checks (each refusal naming its field), filters,
backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.notify import signing
from services.notify.egress import EgressPolicy
from services.notify.errors import InvalidSubscription
from services.notify.model import Subscription, backoff_s, check_subscription, matches

SECRET = "s3cret-s3cret-s3cret"
BODY = b'{"type":"alert.raised"}'
T = 1_765_000_000


def test_a_signature_verifies() -> None:
    header = signing.sign(SECRET, T, BODY)
    assert header.startswith(f"t={T},v1=")
    assert signing.verify(SECRET, header, BODY, now=T + 10)


@pytest.mark.parametrize(
    ("secret", "header", "body", "now"),
    [
        pytest.param("another-secret-xx", signing.sign(SECRET, T, BODY), BODY, T, id="secret"),
        pytest.param(SECRET, signing.sign(SECRET, T, BODY), BODY + b" ", T, id="body"),
        pytest.param(SECRET, signing.sign(SECRET, T, BODY), BODY, T + 301, id="stale"),
        pytest.param(
            SECRET,
            signing.sign(SECRET, T, BODY).replace(f"t={T}", f"t={T + 1}"),
            BODY,
            T,
            id="re-dated",
        ),
        pytest.param(SECRET, "v1=abc", BODY, T, id="no-timestamp"),
        pytest.param(SECRET, "garbage", BODY, T, id="garbage"),
    ],
)
def test_a_wrong_signature_does_not_verify(secret: str, header: str, body: bytes, now: int) -> None:
    assert not signing.verify(secret, header, body, now=now)


GOOD = {"name": "ops", "channel": "webhook", "target": "https://ops.city.example/hook"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"channel": "sms"}, "channel"),
        ({"target": "ftp://ops.city.example/x"}, "target"),
        ({"target": "https://"}, "target"),
        ({"target": "not a url"}, "target"),
        ({"channel": "email", "target": "ops.city.example"}, "target"),
        ({"channel": "email", "target": "a b@city.example"}, "target"),
        ({"secret": "short"}, "secret"),
        ({"channel": "email", "target": "ops@city.example", "secret": SECRET}, "secret"),
        ({"min_severity": "fatal"}, "min_severity"),
        ({"transitions": ["raised", "escalated"]}, "transitions"),
        ({"escalate_after_s": 0}, "escalate_after_s"),
        ({"escalate_to": "https://boss.city.example/"}, "escalate_to"),
        ({"escalate_after_s": 60, "escalate_to": "mailto:x"}, "escalate_to"),
        ({"rule_ids": []}, "rule_ids"),
        ({"district_ids": [""]}, "district_ids"),
    ],
)
def test_a_bad_subscription_is_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSubscription) as caught:
        check_subscription({**GOOD, **changes})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
        ("http://[::1]/hook", "::1 is a loopback address"),
        ("http://10.0.0.5/hook", "10.0.0.5 is a private address"),
        ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe (169.254.169.254) is a link-local"),
        ("http://[::ffff:127.0.0.1]/", "(127.0.0.1) is a loopback address"),
        # Spellings the system resolver reads as IPv4 without asking DNS:
        ("http://2130706433/", "127.0.0.1 is a loopback address"),
        ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
        ("http://017700000001:80/", "127.0.0.1 is a loopback address"),
        ("https://ops:hunter2@ops.city.example/hook", "without user:password@"),
        ("http://[::1/hook", "an http:// or https:// URL"),  # used to escape as a ValueError
        ("http://ops.city.example:99999/", "an http:// or https:// URL"),
        ("http://ops.city.example:0/", "port is 1 to 65535"),
    ],
)
def test_a_webhook_url_webhooks_may_not_reach_is_refused_when_made(target: str, says: str) -> None:
    with pytest.raises(InvalidSubscription) as caught:
        check_subscription({**GOOD, "target": target})
    assert caught.value.field == "target"
    assert says in caught.value.expected
    if "@" in target:  # the password is not repeated back
        assert "hunter2" not in str(caught.value)


def test_the_allowed_networks_admit_addresses_at_creation_as_at_delivery() -> None:
    policy = EgressPolicy.allowing(["10.20.0.0/16"])
    assert check_subscription({**GOOD, "target": "http://10.20.0.5/h"}, policy)["target"] == (
        "http://10.20.0.5/h"
    )
    escalation = {"escalate_after_s": 60, "escalate_to": "http://10.21.0.5/h"}
    with pytest.raises(InvalidSubscription) as caught:
        check_subscription({**GOOD, **escalation}, policy)
    assert caught.value.field == "escalate_to"
    assert "10.21.0.5 is a private address" in caught.value.expected
    assert "URBANPULSE_WEBHOOK_ALLOW_NETWORKS" in caught.value.expected
    # A name is not resolved when made (it may resolve elsewhere later): delivery judges it.
    assert check_subscription({**GOOD, "target": "http://localhost:8080/h"})["target"]


def test_a_webhook_gets_a_random_secret_and_every_transition_by_default() -> None:
    a, b = check_subscription(GOOD), check_subscription(GOOD)
    assert len(a["secret"]) >= 32
    assert a["secret"] != b["secret"]
    assert a["transitions"] == ["raised", "acknowledged", "cleared"]
    assert a["min_severity"] == "info"


def _sub(**changes: Any) -> Subscription:
    columns = check_subscription({**GOOD, **changes})
    return Subscription(id=1, enabled=True, created_at=datetime.now(UTC), **columns)


ALERT = {"id": 1, "rule_id": "r1", "district_id": "north", "severity": "warning"}


@pytest.mark.parametrize(
    ("changes", "transition", "alert", "expected"),
    [
        ({}, "raised", ALERT, True),
        ({"rule_ids": ["r1"]}, "raised", ALERT, True),
        ({"rule_ids": ["r2"]}, "raised", ALERT, False),
        ({"district_ids": ["north"]}, "raised", ALERT, True),
        ({"district_ids": ["south"]}, "raised", ALERT, False),
        ({"district_ids": ["south"]}, "raised", {**ALERT, "district_id": None}, False),
        ({"min_severity": "warning"}, "raised", ALERT, True),
        ({"min_severity": "critical"}, "raised", ALERT, False),
        ({"transitions": ["cleared"]}, "raised", ALERT, False),
        ({"transitions": ["cleared"]}, "cleared", ALERT, True),
        ({}, "escalated", ALERT, False),
        ({"escalate_after_s": 60}, "escalated", ALERT, True),
        ({"escalate_after_s": 60, "min_severity": "critical"}, "escalated", ALERT, False),
    ],
)
def test_filters(
    changes: dict[str, Any], transition: str, alert: dict[str, Any], expected: bool
) -> None:
    assert matches(_sub(**changes), alert, transition) is expected


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 30, 200) for n in range(1, 6)] == [30, 60, 120, 200, 200]
