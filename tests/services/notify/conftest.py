"""Real receivers for the notifier: an HTTP server on 127.0.0.1 (random port) that checks each
delivery's HMAC on its own and can fail on purpose, an aiosmtpd SMTP server, a database with two
alert rules, a hand-moved clock, and ``raise_alert`` writing what the alert engine writes."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from psycopg.rows import dict_row

from services.kpi.alerts import DEFAULT_RULES, upsert_rule
from services.kpi.alerts.evaluate import append_event
from services.kpi.alerts.model import ALERT_COLUMNS, Alert, alert_from_row
from services.notify.channels import SmtpConfig
from services.notify.egress import EgressPolicy
from services.notify.notifier import Notifier, NotifierConfig
from services.storage.urls import libpq_url

Conn = psycopg.Connection[Any]
RULES = {rule.id: rule for rule in DEFAULT_RULES}
# Two default rules of different subjects; their ids are what subscriptions filter by.
GATEWAY_RULE = "gateway-silent"
KPI_RULE = "kpi-missed"


@dataclass
class Delivery:
    headers: Any  # http.client.HTTPMessage: names case-insensitive, as in HTTP
    body: bytes
    verified: bool
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: answers ``fail_next`` requests (then every one while
    ``always_fail``) with 500, every one with a 307 to ``redirect_to`` when set, the rest with
    204; records each request."""

    url: str
    secret: str = ""
    fail_next: int = 0
    always_fail: bool = False
    redirect_to: str | None = None
    requests: list[Delivery] = field(default_factory=list)

    @property
    def delivered(self) -> list[Delivery]:
        return [d for d in self.requests if d.status == 204]


def _verify(secret: str, header: str, body: bytes) -> bool:
    # Independent of services.notify.signing: the documented scheme, computed from scratch.
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def make(tls: dict[str, Path] | None = None) -> Receiver:
        """A receiver over HTTP, or over HTTPS with ``tls``'s server certificate
        (``tests.fixtures.pki``) at https://localhost."""
        receiver = Receiver(url="")

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                failing = receiver.always_fail or receiver.fail_next > 0
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                status = 500 if failing else 307 if receiver.redirect_to else 204
                verified = _verify(receiver.secret, self.headers["X-UrbanPulse-Signature"], body)
                receiver.requests.append(Delivery(self.headers, body, verified, status))
                self.send_response(status)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme, host = "http", "127.0.0.1"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls["server.crt"], tls["server.key"])
            server.socket = context.wrap_socket(server.socket, server_side=True)
            scheme, host = "https", "localhost"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        receiver.url = f"{scheme}://{host}:{server.server_address[1]}/hook"
        return receiver

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[SmtpConfig, Mailbox]]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield SmtpConfig("127.0.0.1", controller.port, "urbanpulse@city.example"), mailbox
    finally:
        controller.stop()


class Clock:
    """The notifier's clock, moved by hand (backoff and escalation without sleeping)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def notify_url(make_database: Any) -> str:
    # Notifications are plain tables, the same in both storage modes.
    url: str = make_database("partitioned")
    with psycopg.connect(libpq_url(url)) as conn:
        for rule_id in (GATEWAY_RULE, KPI_RULE):
            upsert_rule(conn, RULES[rule_id])
    return url


@pytest.fixture
def conn(notify_url: str) -> Iterator[Conn]:
    with psycopg.connect(libpq_url(notify_url), autocommit=True) as connection:
        yield connection


@pytest.fixture
def clock() -> Clock:
    return Clock()


# The receivers listen on loopback, which webhooks may not reach unless allowed (egress.py).
LOOPBACK = EgressPolicy.allowing(["127.0.0.0/8", "::1/128"])
CONFIG = NotifierConfig(
    max_attempts=3, backoff_base_s=30, backoff_cap_s=600, timeout_s=5, egress=LOOPBACK
)


def notifier(conn: Conn, clock: Clock, **changes: Any) -> Notifier:
    return Notifier(conn, dataclasses.replace(CONFIG, **changes), clock=clock)


def raise_alert(
    conn: Conn,
    rule_id: str = GATEWAY_RULE,
    subject: str = "gw-1",
    *,
    district: str | None = "centre",
    severity: str = "warning",
) -> Alert:
    """An alert raised as the engine raises one: the row and its ``alert`` event, one commit."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO alerts (rule_id, subject_id, district_id, domain, severity, message) "
            f"VALUES (%s, %s, %s, NULL, %s, %s) RETURNING {ALERT_COLUMNS}",
            (rule_id, subject, district, severity, f"{subject}: test condition"),
        ).fetchone()
        assert row is not None
        alert = alert_from_row(row)
        append_event(conn, alert, None)
    return alert
