"""Errors of data in and out. ``DataIoError`` is the base; each says, as a
:class:`~services.errors.DomainError`, how the API answers it: a 422 naming the request input at
fault (the uploaded file, or the query parameter its ``argument`` names), so the import and
export routes translate nothing by hand; a command prints ``str(error)``."""

from __future__ import annotations

from services.errors import DomainError, query_field


class DataIoError(DomainError, ValueError):
    """A file or a request that cannot be served as given; ``argument`` names the option (and
    the API's query parameter) at fault, when one is."""

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class SourceError(DataIoError):
    """The file as a whole cannot be read (no header, a mapped column missing, not Parquet), or
    an option that says how to read it (``map``, ``timezone``) is wrong."""

    @property
    def request_field(self) -> str | None:
        return query_field(self.argument) or "body"


class ExportError(DataIoError):
    """A request that cannot be answered as asked (a bad period, an unknown domain)."""

    @property
    def request_field(self) -> str | None:
        # No argument: the query as a whole (a domain with no KPI, a period the engine refuses).
        return query_field(self.argument) or "query"
