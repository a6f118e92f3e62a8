"""RFC 9457 problem details: the one shape of every error the API returns.

Routes raise :class:`Problem` (or let a validation error happen), and let the domain's errors
(:class:`services.errors.DomainError`: storage, KPI, alert, notification and data in/out
errors) pass: each says
its status, problem type and the field at fault, and :func:`problem_of` reads them, in this one
place. The handlers installed by :func:`install` turn every error — ours, the domain's, FastAPI's
request validation, Starlette's 404/405, and anything unexpected — into an
``application/problem+json`` body with ``type``, ``title``, ``status``, ``detail`` and
``instance``. Validation problems add ``errors: [{field, message}]``. An unexpected exception is
logged with its traceback and answered with a 500 that says nothing about the internals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from services.errors import DomainError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# Problem type URIs: a URN per kind of problem, stable for clients to switch on (RFC 9457
# section 3.1.1 allows any URI; a URN promises no documentation page we do not host).
TYPE_PREFIX = "urn:urbanpulse:problem:"


def problem_type(slug: str) -> str:
    """The ``type`` URI of one kind of problem, e.g. ``problem_type("validation")``."""
    return TYPE_PREFIX + slug


_TYPE_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


class Problem(Exception):  # noqa: N818 - named after the RFC's object, not "...Error"
    """An error to answer with a problem-details body.

    ``Problem(404, detail="no sensor 'x'")`` or ``Problem(409, "Conflict", "...", errors=[...])``;
    keyword arguments beyond the named ones become extension members of the body (RFC 9457
    section 3.2). ``headers`` are sent with the response (e.g. ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        type: str | None = None,  # the RFC 9457 member name
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.type = type or problem_type(_TYPE_BY_STATUS.get(status, str(status)))
        self.headers = headers
        self.extensions = extensions
        super().__init__(f"{status} {self.title}: {detail}")

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extensions)
        return body


def invalid(field: str, message: str) -> Problem:
    """A 422 naming one bad input, shaped like a request-validation problem:
    ``raise invalid("query.end", "must be after start")``."""
    return invalid_all([(field, message)])


def invalid_all(errors: Iterable[tuple[str, str]], detail: str | None = None) -> Problem:
    """A 422 listing every ``(field, message)``; ``detail`` defaults to naming the fields."""
    items = [{"field": f, "message": m} for f, m in errors]
    names = ", ".join(dict.fromkeys(e["field"] for e in items))
    return Problem(422, "Invalid request", detail or f"invalid input: {names}", errors=items)


def span_text(span: timedelta) -> str:
    """A time span as a refusal states it: in days, or in seconds when under a day."""
    days = span.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{span.total_seconds():g} s"


def limit_refused(field: str, message: str, setting: str, **limit: float) -> Problem:
    """A 422 refusing a request past a configured limit: ``field`` and ``message`` as in
    :func:`invalid` (the message names ``setting`` and how to stay within it), and the member
    ``limit: {"setting": setting, **limit}`` for clients to read, e.g. ``seconds=86400.0``."""
    problem = invalid(field, message)
    problem.extensions["limit"] = {"setting": setting, **limit}
    return problem


class FieldError(BaseModel):
    """One bad input: where it is and what is wrong with it."""

    field: str = Field(examples=["query.limit"])
    message: str = Field(examples=["Input should be less than or equal to 1000"])


class ProblemBody(BaseModel):
    """RFC 9457 problem details, as documented in the OpenAPI schema."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:urbanpulse:problem:not-found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["no sensor 'wm-0001'"])
    instance: str | None = Field(default=None, examples=["/v1/sensors/wm-0001"])
    errors: list[FieldError] | None = None


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem bodies for these statuses."""
    return {
        status: {
            "model": ProblemBody,
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
        }
        for status in statuses
    }


def problem_of(error: DomainError) -> Problem:
    """The problem that answers a domain error, as the error describes itself: a 422 listing its
    ``request_fields`` when inputs are at fault, else its ``status``, ``title`` and ``problem``
    type with its ``detail``; its extension members either way."""
    fields = error.request_fields()
    if fields:
        problem = invalid_all(fields, error.fields_detail)
    else:
        slug = error.problem
        problem = Problem(
            error.status,
            error.title,
            error.detail,
            type=None if slug is None else problem_type(slug),
        )
    problem.extensions.update(error.extensions())
    return problem


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=request.url.path),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    # FastAPI's locations start with where the input came from (query, path, body, header).
    return ".".join(str(part) for part in loc)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc, request)


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_response(problem_of(exc), request)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [(_field(e.get("loc", ())), str(e.get("msg", ""))) for e in exc.errors()]
    return problem_response(invalid_all(errors), request)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        # FastAPI answers 400 for a body that is not JSON at all; for clients it is one more
        # bad input, reported like every other: a 422 naming the body.
        return problem_response(invalid("body", "not valid JSON"), request)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    problem = Problem(exc.status_code, detail=detail, headers=headers)
    return problem_response(problem, request)


# The methods a route can serve (RFC 9110 section 9 and PATCH, RFC 5789).
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first route
    whose path matched, and FastAPI makes a route per operation: GET /v1/districts said
    ``Allow: GET`` though POST is served there too (RFC 9110 section 15.5.6: all of them).
    Asked of the routes themselves, each method in turn, so included routers answer too."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in routes
            if isinstance(route, BaseRoute)
        )
    ]


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    problem = Problem(500, detail="an unexpected error occurred; it was logged")
    return problem_response(problem, request)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem-details response."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
