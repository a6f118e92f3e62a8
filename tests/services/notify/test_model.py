"""The pure parts: the signature, subscription checks (each refusal naming its field), filters,
backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.notify import signing
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
