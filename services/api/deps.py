"""The dependencies every route uses: a database connection, and the caller with a permission.

    from services.api.deps import Conn, Principal, require, Reader

    @router.get("/things")
    def things(conn: Conn, principal: Reader) -> ...: ...

- ``Conn``: a ``psycopg.Connection`` (tuple rows) from the app's pool; committed when the
  endpoint returns normally, rolled back when it raises, before the response is sent.
- ``ReadConn``: the same for routes that only read: from the read replica's pool when
  ``URBANPULSE_DATABASE_READ_URL`` is set and the replica is within its maximum lag, else
  from the primary's. A route that writes, or must see its own write, takes ``Conn``.
- ``require("read")`` is ``Annotated[Principal, Depends(...)]``: the caller, refused with 401
  (no or bad key) or 403 (role lacks the permission). mypy does not accept a call in an
  annotation, so typed code uses the aliases below (``Reader``, ``Streamer``, ``AlertWriter``,
  ``RegistryWriter``, ``KeyAdmin``), which are exactly ``require(...)`` of each permission.

Permissions: read, stream, alerts:write, registry:write, keys:admin, settings:write; roles:
operator = read, stream, alerts:write; engineer = operator + registry:write; service = read,
stream; admin = all (keys:admin and settings:write are admin's alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from services.readreplica.routing import ReplicaGate

from .auth import Authenticator, Principal, key_id_of
from .guards import FailureLimiter, too_many
from .keys import PERMISSIONS, ROLE_PERMISSIONS
from .problems import Problem

T = TypeVar("T")

# Unverified key checks (a query and a scrypt each, ~40 ms of a core) running at once; the
# others wait on the event loop, holding no thread, so a flood of wrong secrets cannot take the
# threads and cores of callers whose keys are already verified.
KEY_CHECKS_AT_ONCE = 2

__all__ = [
    "PERMISSIONS",
    "ROLE_PERMISSIONS",
    "AlertWriter",
    "Conn",
    "KeyAdmin",
    "Principal",
    "ReadConn",
    "Reader",
    "RegistryWriter",
    "Replica",
    "Streamer",
    "get_conn",
    "get_pool",
    "get_read_conn",
    "read_connection",
    "require",
    "statement_timeout_ms",
    "with_connection",
]


def statement_timeout_ms(timeout: timedelta) -> int:
    """PostgreSQL's ``statement_timeout`` in milliseconds (at least 1: 0 would mean none)."""
    return max(1, round(timeout.total_seconds() * 1000))


def get_pool(request: Request) -> ConnectionPool:
    """The app's connection pool (made in the lifespan of ``services.api.app``)."""
    pool: ConnectionPool = request.app.state.pool
    return pool


@dataclass(frozen=True, slots=True)
class Replica:
    """The read replica's pools and the gate saying whether to use them (``services.api.app``)."""

    pool: ConnectionPool
    async_pool: AsyncConnectionPool
    gate: ReplicaGate


def _replica(request: Request) -> Replica | None:
    """The replica to read from now, or None: none configured, or lagging, or not answering."""
    replica: Replica | None = request.app.state.replica
    return replica if replica is not None and replica.gate.use_replica else None


def read_pool(request: Request) -> ConnectionPool:
    """The pool for a read-only request: the replica's while it is usable, else the primary's."""
    replica = _replica(request)
    return replica.pool if replica is not None else get_pool(request)


async def connection_slot(request: Request) -> AsyncIterator[None]:
    """Wait, without a thread, for the right to take a pooled connection.

    Sync dependencies and endpoints share AnyIO's threadpool (40 threads). Were threads to wait
    for the pool themselves, 40 concurrent requests could hold every thread waiting while the
    few holding connections had no thread left to run their endpoint in: every request then
    stalled until the pool's timeout (bench/bench_api.py measured exactly that at 50
    connections). Waiting here, on the event loop, a request takes a thread only once a
    connection is sure to be free.
    """
    slots: asyncio.Semaphore = request.app.state.connection_slots
    async with slots:
        yield


def get_conn(
    request: Request, _slot: Annotated[None, Depends(connection_slot, scope="function")]
) -> Iterator[psycopg.Connection[TupleRow]]:
    """A pooled connection for one request; the pool's context commits on a normal exit and
    rolls back when the endpoint raised (FastAPI throws the exception into this generator)."""
    with get_pool(request).connection() as conn:
        yield conn


async def with_connection(
    request: Request,
    work: Callable[[psycopg.Connection[TupleRow]], T],
    *,
    read_only: bool = False,
    replica: bool | None = None,
) -> T:
    """Run ``work(conn)`` in a thread on a pooled connection, committed when it returns: for
    ``async`` endpoints that need the database only sometimes (a cache miss), so their other
    requests never leave the event loop. Takes a connection slot first, like :data:`Conn`.

    ``read_only`` runs each query in its own implicit transaction (autocommit), which saves the
    COMMIT round trip: a quarter of a readings request's time under load (py-spy).
    ``replica`` (default: ``read_only``) takes the connection from :func:`read_pool`: for work
    that writes nothing, whether or not it commits.
    """
    slots: asyncio.Semaphore = request.app.state.connection_slots
    pool = read_pool(request) if (read_only if replica is None else replica) else get_pool(request)

    def run() -> T:
        with pool.connection() as conn:
            if not read_only:
                return work(conn)
            conn.autocommit = True
            try:
                return work(conn)
            finally:
                conn.autocommit = False

    async with slots:
        return await run_in_threadpool(run)


@asynccontextmanager
async def read_connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
    """An autocommit connection from the app's async pool, for read-only ``async`` endpoints
    that always query (no thread at all); the replica's while it is usable."""
    replica = _replica(request)
    pool: AsyncConnectionPool = (
        replica.async_pool if replica is not None else request.app.state.async_pool
    )
    async with pool.connection() as conn:
        yield conn


def get_read_conn(
    request: Request, _slot: Annotated[None, Depends(connection_slot, scope="function")]
) -> Iterator[psycopg.Connection[TupleRow]]:
    """Like :func:`get_conn`, from :func:`read_pool`."""
    with read_pool(request).connection() as conn:
        yield conn


# scope="function": the commit happens when the endpoint returns, before the response is
# sent, so a client never sees 201 for a write that then fails to commit.
Conn = Annotated[psycopg.Connection[TupleRow], Depends(get_conn, scope="function")]
ReadConn = Annotated[psycopg.Connection[TupleRow], Depends(get_read_conn, scope="function")]

_AUTH_HEADERS = {"WWW-Authenticate": 'Bearer realm="urbanpulse", charset="UTF-8"'}


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def client_address(request: Request) -> str:
    """Who is calling, for counting failed key checks: the peer address (behind a proxy, run
    uvicorn with ``--proxy-headers`` so that it is the client's, not the proxy's)."""
    return request.client.host if request.client else "unknown"


async def current_principal(request: Request) -> Principal:
    """The caller, or a 401 problem when no valid key was presented. A key checked in the last
    seconds is answered on the event loop; checking one takes a thread (a query, maybe scrypt).

    Unverified checks are guarded: a client address or key id with too many recent failures
    gets a 429 before any query (``URBANPULSE_API_AUTH_FAILURES_MAX`` within
    ``URBANPULSE_API_AUTH_FAILURES_WINDOW``), and at most :data:`KEY_CHECKS_AT_ONCE` run at
    once."""
    checked: Principal | None = getattr(request.state, "principal", None)
    if checked is not None:
        return checked  # already checked for this request, before its body was read
    token = _presented_key(request)
    if token is None:
        raise Problem(
            401,
            detail="an API key is needed: send it as X-API-Key or Authorization: Bearer",
            headers=_AUTH_HEADERS,
        )
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.cached(token)
    if principal is None:
        limiter: FailureLimiter = request.app.state.auth_failures
        identities = ("client:" + client_address(request), "key:" + key_id_of(token))
        wait = None if authenticator.proven(token) else limiter.retry_after(*identities)
        if wait is not None:
            raise too_many(f"too many failed API key checks; retry in {wait} s", wait)
        checks: asyncio.Semaphore = request.app.state.key_checks
        async with checks:
            principal = await run_in_threadpool(authenticator.authenticate, token)
        if principal is None:
            limiter.failed(*identities)
            raise Problem(
                401, detail="the API key is unknown, malformed or revoked", headers=_AUTH_HEADERS
            )
    request.state.principal = principal
    return principal


def permission(name: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency callable returning the caller when its role grants ``name``."""
    if name not in PERMISSIONS:
        raise ValueError(f"unknown permission {name!r}; one of {', '.join(PERMISSIONS)}")

    async def check(request: Request) -> Principal:
        principal = await current_principal(request)
        if not principal.can(name):
            raise Problem(
                403,
                detail=f"role {principal.role!r} does not grant {name!r}",
                permission=name,
                role=principal.role,
            )
        return principal

    check.__name__ = f"require_{name.replace(':', '_')}"
    return check


_CHECKS = {name: permission(name) for name in PERMISSIONS}


def require(permission_name: str) -> Any:
    """``Annotated[Principal, Depends(...)]`` for a parameter: the caller, who must hold
    ``permission_name``. (Typed ``Any`` because it is used as a type; see the module doc.)"""
    if permission_name not in _CHECKS:
        raise ValueError(f"unknown permission {permission_name!r}; one of {', '.join(PERMISSIONS)}")
    return Annotated[Principal, Depends(_CHECKS[permission_name])]


Reader = Annotated[Principal, Depends(_CHECKS["read"])]
Streamer = Annotated[Principal, Depends(_CHECKS["stream"])]
AlertWriter = Annotated[Principal, Depends(_CHECKS["alerts:write"])]
RegistryWriter = Annotated[Principal, Depends(_CHECKS["registry:write"])]
KeyAdmin = Annotated[Principal, Depends(_CHECKS["keys:admin"])]
SettingsWriter = Annotated[Principal, Depends(_CHECKS["settings:write"])]
