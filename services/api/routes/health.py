"""Operations endpoints, without auth: ``/healthz``, ``/readyz``, ``/metrics``.

``/readyz`` checks with fresh connections and short timeouts, not the request pool: a pool
exhausted by slow queries must not make the probe hang, and a probe must see a database that
came back before the pool notices.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import struct
from typing import Any
from urllib.parse import urlsplit

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from services.settings import Settings
from services.storage.urls import libpq_url

from ..problems import MEDIA_TYPE, Problem, responses

router = APIRouter(tags=["operations"])

# Short enough for a kubelet's default 1 s probe budget to be exceeded only when something is
# really down, long enough for a loaded machine to answer.
CHECK_TIMEOUT_S = 2.0


class Check(BaseModel):
    ok: bool
    detail: str = Field(examples=["at revision 0002 (head)"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    checks: dict[str, Check]


def head_revision() -> str:
    """The newest migration this code ships (what a ready database must be at)."""
    config = Config()
    config.set_main_option("script_location", "services.storage:migrations")
    return ScriptDirectory.from_config(config).get_current_head() or ""


def check_database(url: str | None, head: str) -> Check:
    if not url:
        return Check(ok=False, detail="no database configured")
    try:
        with psycopg.connect(
            libpq_url(url), connect_timeout=max(1, int(CHECK_TIMEOUT_S)), autocommit=True
        ) as conn:
            exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            row = (
                conn.execute("SELECT version_num FROM alembic_version").fetchone()
                if exists and exists[0]
                else None
            )
    except psycopg.Error as exc:
        return Check(ok=False, detail=f"unreachable: {type(exc).__name__}")
    current = str(row[0]) if row else None
    if current != head:
        return Check(ok=False, detail=f"at revision {current or 'none'}, head is {head}")
    return Check(ok=True, detail=f"at revision {current} (head)")


def _connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, keep-alive 5 s); every broker speaks 3.1.1."""

    def field(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = field("MQTT") + bytes([4, flags]) + struct.pack("!H", 5) + field(client_id)
    if username:
        body += field(username)
        if password:
            body += field(password)
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x10]) + bytes(encoded) + body


def check_broker(settings: Settings) -> Check:
    if not settings.mqtt_url:
        return Check(ok=False, detail="no broker configured")
    parts = urlsplit(settings.mqtt_url)
    tls = parts.scheme == "mqtts"
    host, port = parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883)
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    packet = _connect_packet(
        f"urbanpulse-readyz-{secrets.token_hex(4)}", settings.mqtt_username, password
    )
    try:
        with socket.create_connection((host, port), timeout=CHECK_TIMEOUT_S) as raw:
            sock: socket.socket = (
                ssl.create_default_context().wrap_socket(raw, server_hostname=host) if tls else raw
            )
            sock.sendall(packet)
            connack = sock.recv(4)
            if len(connack) == 4 and connack[0] == 0x20:
                sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs no lost client
    except OSError as exc:
        return Check(ok=False, detail=f"unreachable at {host}:{port}: {type(exc).__name__}")
    if len(connack) != 4 or connack[0] != 0x20:
        return Check(ok=False, detail=f"{host}:{port} did not answer CONNECT with CONNACK")
    if connack[3] != 0:
        # The broker is up but refuses our credentials: the live path through it is broken.
        return Check(ok=False, detail=f"{host}:{port} refused CONNECT (return code {connack[3]})")
    return Check(ok=True, detail=f"CONNACK from {host}:{port}")


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    """Always 200 while the process serves requests; says nothing about its dependencies."""
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Ready to serve: database migrated to head and broker reachable",
    response_model=Readiness,
    responses=responses(503),
)
def readyz(request: Request) -> Any:
    """200 when the database answers at the newest migration and the broker answers CONNECT;
    otherwise a 503 problem whose ``checks`` say which is down."""
    settings: Settings = request.app.state.settings
    checks = {
        "database": check_database(settings.database_url, request.app.state.head_revision),
        "broker": check_broker(settings),
    }
    down = [name for name, check in checks.items() if not check.ok]
    if not down:
        return Readiness(status="ready", checks=checks)
    problem = Problem(
        503,
        "Not ready",
        "down: " + ", ".join(f"{name} ({checks[name].detail})" for name in down),
        down=down,
        checks={name: check.model_dump() for name, check in checks.items()},
    )
    return JSONResponse(
        problem.body(instance=request.url.path), status_code=503, media_type=MEDIA_TYPE
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    """Request counts and latency histograms by route template and status."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
