"""Errors of the data layer. ``StorageError`` is the base; each carries what went wrong as data."""

from __future__ import annotations


class StorageError(Exception):
    """Base of the data layer's errors."""


class ModeError(StorageError):
    """The requested storage mode cannot run on this server, or conflicts with the stored one."""

    def __init__(self, requested: str, detail: str) -> None:
        super().__init__(f"storage mode {requested!r}: {detail}")
        self.requested = requested
        self.detail = detail


class NotMigratedError(StorageError):
    """The database has no UrbanPulse schema yet: run `urbanpulse db upgrade`."""

    def __init__(self) -> None:
        super().__init__("the database has no UrbanPulse schema: run `urbanpulse db upgrade`")


class FieldError(StorageError, ValueError):
    """The caller's input is refused; ``field`` names it and ``message`` says what is wrong
    (the API answers 422 naming the field, the CLI prints both)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SensorNotFoundError(StorageError, LookupError):
    def __init__(self, sensor_id: str) -> None:
        super().__init__(f"no sensor {sensor_id!r} in the registry")
        self.sensor_id = sensor_id
