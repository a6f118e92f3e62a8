"""What one caller may cost the API before a route runs: request bodies and failed key checks.

:class:`BodyLimitMiddleware` refuses a body larger than its route allows with a 413 problem
while it streams in (a declared ``Content-Length`` is refused before a byte is read; a chunked
body as soon as the running count passes the limit), and checks the API key of a ``/v1``
request with a body before reading any of it: FastAPI reads the whole body before it runs a
route's dependencies, so without this an unauthenticated client made the API buffer whatever
it sent (three 150 MB POSTs took the process from 557 MB to 1.17 GB, never given back).

:class:`FailureLimiter` counts failed key checks per client address and per key id in a sliding
window; past the limit, further unverified attempts are answered 429 with ``Retry-After`` before
any database query or scrypt, so guessing secrets costs the guesser, not the other callers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import problems

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Authenticate = Callable[[Request], Awaitable[object]]


def too_many(detail: str, retry_after_s: int) -> problems.Problem:
    """A 429 problem telling the caller when to try again."""
    return problems.Problem(
        429,
        detail=detail,
        type=problems.problem_type("too-many-requests"),
        headers={"Retry-After": str(retry_after_s)},
        retry_after_s=retry_after_s,
    )


class _BodyTooLargeError(Exception):
    """Raised out of ``receive`` when the body passes its route's limit."""


class BodyLimitMiddleware:
    """Per-route body limits (``limits``: exact path -> (bytes, the setting that sets them),
    else ``default``) and the key check before a ``/v1`` body is read (``authenticate`` raises a
    Problem to refuse). A refusal names the setting, so an operator knows what to raise."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticate,
        default: tuple[int, str],
        limits: Mapping[str, tuple[int, str]],
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.default = default
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        limit, setting = self.limits.get(scope["path"], self.default)
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _refuse(_too_large(limit, setting), request, send)
            return
        has_body = declared not in (None, "0") or "transfer-encoding" in request.headers
        if scope["method"] in _BODY_METHODS and has_body and scope["path"].startswith("/v1/"):
            try:
                await self.authenticate(request)
            except problems.Problem as problem:
                await _refuse(problem, request, send)
                return
            except (PoolTimeout, psycopg.OperationalError):
                # Outside the app's exception handlers here: answer as they would.
                down = problems.Problem(
                    503, "Database unavailable", "the database did not answer in time"
                )
                await _refuse(down, request, send)
                return

        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            # Once the body was cut, whatever the route answers (FastAPI turns a failed read
            # into a 400) is dropped: the answer is the 413 below.
            if not exceeded:
                await send(message)

        with contextlib.suppress(_BodyTooLargeError):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded:
            await _refuse(_too_large(limit, setting), request, send)


def _too_large(limit: int, setting: str) -> problems.Problem:
    return problems.Problem(
        413,
        detail=f"the request body may be at most {limit} bytes on this route ({setting})",
        max_bytes=limit,
        setting=setting,
    )


async def _refuse(problem: problems.Problem, request: Request, send: Send) -> None:
    response = problems.problem_response(problem, request)
    # The unread rest of the body must not be taken for the next request on this connection.
    response.headers["Connection"] = "close"

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(request.scope, nothing, send)


class FailureLimiter:
    """Failed attempts per identity (a client address, a key id) in a sliding window.

    Thread-safe; at most ``capacity`` identities are tracked (the least recently failed are
    forgotten first), so a flood of made-up ids cannot grow it without bound.
    """

    def __init__(self, max_failures: int, window_s: float, *, capacity: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.capacity = capacity
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, *identities: str) -> int | None:
        """Seconds until every one of ``identities`` may try again, or None when all may now."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for identity in identities:
                times = self._failures.get(identity)
                if times is None:
                    continue
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.max_failures:
                    wait = max(wait, times[0] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, *identities: str) -> None:
        now = time.monotonic()
        with self._lock:
            for identity in identities:
                times = self._failures.pop(identity, None) or deque()
                times.append(now)
                while len(times) > self.max_failures:
                    times.popleft()
                self._failures[identity] = times
            while len(self._failures) > self.capacity:
                self._failures.popitem(last=False)
