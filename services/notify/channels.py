"""Delivery over the wire: a signed HTTP POST (stdlib urllib) and an e-mail (stdlib smtplib).

Each raises :class:`DeliveryFailed` with the receiver's answer when it does not deliver; the
notifier turns that into a retry or a dead letter.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from . import signing
from .errors import DeliveryFailed


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0


def body_of(payload: dict[str, Any]) -> bytes:
    # Compact and key-sorted: the signed bytes are exactly the bytes sent.
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def post_webhook(
    url: str,
    secret: str,
    payload: dict[str, Any],
    *,
    delivery_id: int,
    now: float,
    timeout_s: float,
) -> None:
    body = body_of(payload)
    request = urllib.request.Request(  # noqa: S310 (http(s) only: model.check_target)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "UrbanPulse-Notifier",
            signing.HEADER: signing.sign(secret, int(now), body),
            signing.DELIVERY_HEADER: str(delivery_id),
            signing.EVENT_HEADER: str(payload["type"]),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (as above)
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryFailed(f"{url} unreachable: {exc}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"HTTP {status} from {url}")


def subject_of(payload: dict[str, Any]) -> str:
    alert = payload["alert"]
    mark = "ESCALATION: " if payload["escalation"] else ""
    state = "still unacknowledged" if payload["escalation"] else alert["state"]
    return f"{mark}[{alert['severity']}] {alert['rule_id']} {state}: {alert['subject_id']}"


def text_of(payload: dict[str, Any]) -> str:
    alert = payload["alert"]
    lines = [
        alert["message"],
        "",
        f"alert {alert['id']}: {alert['state']} (severity {alert['severity']})",
        f"rule: {alert['rule_id']}   subject: {alert['subject_id']}",
        f"district: {alert.get('district_id') or '-'}   raised at: {alert['raised_at']}",
    ]
    if payload["escalation"]:
        lines.insert(0, "Nobody has acknowledged this alert yet.\n")
    lines += ["", f"subscription: {payload['subscription']['name']}"]
    return "\n".join(lines) + "\n"


def send_email(config: SmtpConfig, to: str, payload: dict[str, Any], *, delivery_id: int) -> None:
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = subject_of(payload)
    message[signing.DELIVERY_HEADER] = str(delivery_id)
    message.set_content(text_of(payload))
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.username:
                smtp.login(config.username, config.password or "")
            smtp.send_message(message)
    except smtplib.SMTPException as exc:
        raise DeliveryFailed(f"SMTP refused: {exc}") from None
    except OSError as exc:
        raise DeliveryFailed(
            f"SMTP server {config.host}:{config.port} unreachable: {exc}"
        ) from None
