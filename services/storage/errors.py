"""Errors of the data layer. ``StorageError`` is the base; each carries what went wrong as data
and, as a :class:`~services.errors.DomainError`, how the API answers it."""

from __future__ import annotations

from services.errors import DomainError


class StorageError(DomainError):
    """Base of the data layer's errors."""

    # A stored state the request cannot be served from (the schema, the mode): not the caller's
    # input, and not a bug either.
    status = 503


class ModeError(StorageError):
    """The requested storage mode cannot run on this server, or conflicts with the stored one."""

    def __init__(self, requested: str, detail: str) -> None:
        super().__init__(f"storage mode {requested!r}: {detail}")
        self.requested = requested
        # Not ``detail``: that is the whole message, as every DomainError's.
        self.reason = detail


class NotMigratedError(StorageError):
    """The database has no UrbanPulse schema yet: run `urbanpulse db upgrade`."""

    def __init__(self) -> None:
        super().__init__("the database has no UrbanPulse schema: run `urbanpulse db upgrade`")


class FieldError(StorageError, ValueError):
    """The caller's input is refused; ``field`` names it and ``message`` says what is wrong
    (the API answers 422 naming the body's field, the CLI prints both)."""

    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    @property
    def request_field(self) -> str | None:
        return f"body.{self.field}"

    @property
    def detail(self) -> str:
        return self.message


class SensorNotFoundError(StorageError, LookupError):
    status = 404

    def __init__(self, sensor_id: str) -> None:
        super().__init__(f"no sensor {sensor_id!r} in the registry")
        self.sensor_id = sensor_id
