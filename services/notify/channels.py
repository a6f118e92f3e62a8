"""Delivery over the wire: a signed HTTP POST (stdlib http.client, over a connection
``egress`` opened to a permitted address) and an e-mail (stdlib smtplib).

Each raises :class:`DeliveryFailed` with the receiver's answer when it does not deliver; the
notifier turns that into a retry or a dead letter.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from . import egress, signing
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
    policy: egress.EgressPolicy,
    resolver: egress.Resolver = egress.system_resolver,
) -> None:
    body = body_of(payload)
    parts = urlsplit(url)  # http(s) with a host: model.check_target
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:  # stored before creation checked ports: a failure, not a dead notifier
        raise DeliveryFailed(f"{url}: the port is not 1 to 65535") from None
    deadline = time.monotonic() + timeout_s
    sock = egress.connect(policy, host, port, timeout_s, deadline=deadline, resolver=resolver)
    # One deadline for the whole delivery: the socket's timeout bounds each wait, not a receiver
    # that sends a byte just inside each one. At the deadline the socket is shut, which ends
    # whatever wait is under way (TLS handshake, headers, body).
    held, cut = [sock], threading.Event()
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, (held, cut))
    timer.daemon = True
    timer.start()
    connection: http.client.HTTPConnection
    try:
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            held[0] = sock
            connection = http.client.HTTPSConnection(host, port, timeout=timeout_s)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
        # Already connected, to the address egress judged: http.client must not resolve again.
        connection.sock = sock
        connection.request(
            "POST",
            (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "UrbanPulse-Notifier",
                signing.HEADER: signing.sign(secret, int(now), body),
                signing.DELIVERY_HEADER: str(delivery_id),
                signing.EVENT_HEADER: str(payload["type"]),
            },
        )
        response = connection.getresponse()
        status = response.status
        response.read(_RESPONSE_BYTES)  # what the receiver says is not kept: bounded
        if cut.is_set():  # the shut socket read as the end of the answer: not an answer
            raise OSError("cut at the deadline")
    except (OSError, http.client.HTTPException) as exc:
        if cut.is_set() or time.monotonic() >= deadline:
            raise DeliveryFailed(f"{url} did not answer within {timeout_s:g} s") from None
        raise DeliveryFailed(f"{url} unreachable: {exc or type(exc).__name__}") from None
    finally:
        timer.cancel()
        sock.close()
    if not 200 <= status < 300:
        # A redirect too: following it could lead the notifier where egress would refuse.
        raise DeliveryFailed(f"HTTP {status} from {url}")


# The most of a receiver's answer read before closing.
_RESPONSE_BYTES = 64 * 1024


def _shut(held: list[socket.socket], cut: threading.Event) -> None:
    cut.set()
    with contextlib.suppress(OSError):  # closed already: the delivery ended meanwhile
        held[0].shutdown(socket.SHUT_RDWR)


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
