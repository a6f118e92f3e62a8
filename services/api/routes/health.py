"""Operations endpoints, without auth: ``/healthz``, ``/readyz``, ``/metrics``.

``/readyz`` answers anyone with its status and which check is down; what each check found (the
broker's host and port, the migration revision) only a caller with a valid API key sees, since
it maps the deployment for an attacker (issue 11). A key is checked against the database, so
while the database is down only a key checked in the last seconds (the cache) counts.

``/readyz`` checks with fresh connections and short timeouts, not the request pool: a pool
exhausted by slow queries must not make the probe hang, and a probe must see a database that
came back before the pool notices.
"""

from __future__ import annotations

import secrets
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field

from services.readreplica.routing import ReplicaGate
from services.settings import Settings
from services.storage.urls import libpq_url

from ..auth import Authenticator
from ..deps import Replica

# The header parsing every /v1 route uses; /readyz uses it without refusing the caller.
from ..deps import _presented_key as presented_key
from ..problems import MEDIA_TYPE, Problem, responses

router = APIRouter(tags=["operations"])

# Short enough for a kubelet's default 1 s probe budget to be exceeded only when something is
# really down, long enough for a loaded machine to answer.
CHECK_TIMEOUT_S = 2.0


class Check(BaseModel):
    ok: bool
    detail: str | None = Field(
        default=None,
        description="what the check found; null unless the caller sent a valid API key",
        examples=["at revision 0002 (head)"],
    )


class Readiness(BaseModel):
    status: str = Field(
        examples=["ready"],
        description="ready, or degraded: serving, but a check that does not stop the API "
        "failed (the read replica lags or is down, so reads go to the primary)",
    )
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


def check_replica(gate: ReplicaGate) -> Check:
    """Asks the standby now (and updates where reads go): ok when reads are on it."""
    found = gate.refresh()
    return Check(ok=found.use_replica, detail=found.detail)


def check_broker(settings: Settings) -> Check:
    """CONNECT through paho-mqtt, the client every other part of the platform uses, so the probe
    speaks MQTT as every broker we start or name expects (a hand-written packet read with one
    ``recv(4)`` got no CONNACK from rumqttd)."""
    if not settings.mqtt_url:
        return Check(ok=False, detail="no broker configured")
    parts = urlsplit(settings.mqtt_url)
    tls = parts.scheme == "mqtts"
    host, port = parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"urbanpulse-readyz-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,  # the platform speaks MQTT 5 (rumqttd serves 3.1.1 on another port)
    )
    if settings.mqtt_username:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        client.username_pw_set(settings.mqtt_username, password)
    if tls:
        client.tls_set_context(ssl.create_default_context())
    answers: list[ReasonCode] = []
    client.connect_timeout = CHECK_TIMEOUT_S  # paho's own default (5 s) covers TCP and TLS
    client.on_connect = lambda _client, _userdata, _flags, reason, _props: answers.append(reason)
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    closed = False
    try:
        client.connect(host, port, keepalive=5, clean_start=True)
        while not answers and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                closed = True
                break
        if answers and not answers[0].is_failure:
            client.disconnect()  # so the broker logs no lost client
            client.loop(timeout=0.05)  # sends it
    except (OSError, ValueError) as exc:
        return Check(ok=False, detail=f"unreachable at {host}:{port}: {type(exc).__name__}")
    finally:
        leftover = client.socket()  # a broker that never answered keeps the connection open
        if leftover is not None:
            leftover.close()
    if not answers and closed:
        # rumqttd refuses a login by closing the connection without a CONNACK.
        return Check(
            ok=False,
            detail=f"{host}:{port} refused CONNECT: closed the connection without a CONNACK",
        )
    if not answers:
        return Check(ok=False, detail=f"{host}:{port} did not answer CONNECT with CONNACK")
    if answers[0].is_failure:
        # The broker is up but refuses our credentials: the live path through it is broken.
        return Check(ok=False, detail=f"{host}:{port} refused CONNECT ({answers[0]})")
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
    otherwise a 503 problem whose ``checks`` say which is down. What each check found is shown
    only to a caller with a valid API key (``X-API-Key`` or a bearer token); without one, or
    with a bad one, ``detail`` is null.

    With a read replica (``URBANPULSE_DATABASE_READ_URL``), ``checks.replica`` says whether
    reads are on it, and its replay lag; a replica down or past
    ``URBANPULSE_DATABASE_READ_MAX_LAG`` makes the status ``degraded``, still 200: reads then
    go to the primary, so the API keeps answering, freshly."""
    settings: Settings = request.app.state.settings
    checks = {
        "database": check_database(settings.database_url, request.app.state.head_revision),
        "broker": check_broker(settings),
    }
    replica: Replica | None = request.app.state.replica
    if replica is not None:
        checks["replica"] = check_replica(replica.gate)
    if not _authenticated(request, database_up=checks["database"].ok):
        checks = {name: Check(ok=check.ok) for name, check in checks.items()}
    optional = {"replica"}
    down = [name for name, check in checks.items() if not check.ok and name not in optional]
    if not down:
        degraded = any(name in checks and not checks[name].ok for name in optional)
        return Readiness(status="degraded" if degraded else "ready", checks=checks)
    problem = Problem(
        503,
        "Not ready",
        "down: "
        + ", ".join(
            name if checks[name].detail is None else f"{name} ({checks[name].detail})"
            for name in down
        ),
        down=down,
        checks={name: check.model_dump() for name, check in checks.items()},
    )
    return JSONResponse(
        problem.body(instance=request.url.path), status_code=503, media_type=MEDIA_TYPE
    )


def _authenticated(request: Request, *, database_up: bool) -> bool:
    """Whether the caller sent a valid key. Never refuses: a probe without a key is answered.
    With the database down only the cache can tell, without waiting for the pool."""
    token = presented_key(request)
    if token is None:
        return False
    authenticator: Authenticator = request.app.state.authenticator
    if not database_up:
        return authenticator.cached(token) is not None
    try:
        return authenticator.authenticate(token) is not None
    except (PoolTimeout, psycopg.Error):
        return False


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
