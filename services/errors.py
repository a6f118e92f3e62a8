"""The base of every error a request can cause, carrying what an HTTP answer needs.

Each server package keeps its errors in its own ``errors.py`` under one base class
(``StorageError``, ``KpiError``, ``AlertError``, ``NotifyError``, ``DataIoError``); those bases
derive from :class:`DomainError`, which states, as data, how the API answers the error: its
status, its problem type and title, the request fields at fault and any extension members (as h11's
``ProtocolError`` carries ``error_status_hint``). The API turns every ``DomainError`` into an
RFC 9457 problem in one handler (``services.api.problems``), so routes do not translate errors
one by one and no domain package imports FastAPI; a command prints ``str(error)``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """An error of the caller's making (or of a state that refuses the request), with its HTTP
    meaning. Subclasses set the class attributes, and override :attr:`request_field` when one
    input of the request is at fault."""

    status: ClassVar[int] = 422
    """The HTTP status that answers it."""
    problem: ClassVar[str | None] = None
    """The problem type's slug (``urn:urbanpulse:problem:<slug>``); None: the status's own."""
    title: ClassVar[str | None] = None
    """The problem's title; None: the status's reason phrase."""

    @property
    def request_field(self) -> str | None:
        """The request input at fault, as the API names it (``query.district``,
        ``body.value``): the answer is then a 422 listing it in ``errors``. None: the request
        as a whole."""
        return None

    @property
    def detail(self) -> str:
        """What went wrong, for a person: the problem's ``detail`` (or, with a
        :attr:`request_field`, the message of that field)."""
        return str(self)

    def request_fields(self) -> list[tuple[str, str]]:
        """Every request input at fault with what is wrong with it, ``(field, message)``: the
        answer is then a 422 listing each in ``errors``. By default :attr:`request_field` with
        :attr:`detail`; override it when several inputs can be at fault at once (a manifest's
        rows, a registry row's columns). Empty: the request as a whole."""
        field = self.request_field
        return [] if field is None else [(field, self.detail)]

    @property
    def fields_detail(self) -> str | None:
        """The ``detail`` of the 422 that lists :meth:`request_fields`; None: one naming them."""
        return None

    def extensions(self) -> dict[str, Any]:
        """Extension members of the problem body (RFC 9457 section 3.2), e.g. an alert's state."""
        return {}


def query_field(name: str | None) -> str | None:
    """A query parameter's field name, as validation problems spell it (``query.<name>``)."""
    return None if name is None else f"query.{name}"
