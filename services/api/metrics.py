"""Prometheus metrics of the API, and the outermost middleware that records them.

Labels use the route *template* (``/v1/sensors/{sensor_id}``), never the raw path, so a client
walking ids cannot blow up the series count. Each app has its own registry, so several apps in
one process (the tests) do not collide.

The middleware is also the last line of error handling: an exception nothing else handled is
logged and answered with a 500 problem here, instead of Starlette's error middleware
re-raising it to the server.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import Problem, problem_response

log = logging.getLogger(__name__)

# Latency buckets from a cached key lookup (~1 ms) to a year of daily rollups or a bulk load.
_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """The collectors, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "urbanpulse_api_requests",
            "HTTP requests answered, by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "urbanpulse_api_request_duration_seconds",
            "time to answer (to the first response byte), by route template and status",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )


def route_template(app: Any, scope: Scope) -> str:
    """The template of the route that matches ``scope``, or ``unmatched``."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path_format"):
        template = str(route.path_format)
        # FastAPI mounts an included router whole, so the matched route's template lacks the
        # router's prefix (/v1): take it from the path, whose last segments the template
        # matched one for one (none of our path parameters may contain '/').
        path_parts = str(scope.get("path", "")).rstrip("/").split("/")
        template_parts = template.rstrip("/").split("/")
        prefix = "/".join(path_parts[: len(path_parts) - len(template_parts) + 1])
        return prefix + template
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path_format", getattr(candidate, "path", "unmatched")))
    return "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request; turns an unhandled exception into a 500 problem."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, root: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.root = root

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
                self._observe(scope, status, time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            problem = Problem(500, detail="an unexpected error occurred; it was logged")
            await problem_response(problem, Request(scope))(scope, receive, send_wrapper)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        labels = (scope.get("method", ""), route_template(self.root, scope), str(status))
        self.metrics.requests.labels(*labels).inc()
        self.metrics.latency.labels(*labels).observe(seconds)
