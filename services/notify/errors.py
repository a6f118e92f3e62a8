"""Errors of the notifications package: one base class, each error naming its field and, as a
:class:`~services.errors.DomainError`, how the API answers it."""

from __future__ import annotations

from typing import Any

from services.errors import DomainError


class NotifyError(DomainError):
    """Base of every notifications error."""


class InvalidSubscription(NotifyError, ValueError):  # noqa: N818 (reads as the API says it)
    """A subscription field the caller got wrong (the API answers 422 naming ``field``)."""

    def __init__(self, field: str, value: Any, expected: str) -> None:
        super().__init__(f"{field}: {expected} (got {value!r})")
        self.field = field
        self.value = value
        self.expected = expected

    @property
    def request_field(self) -> str | None:
        return f"body.{self.field}"

    @property
    def detail(self) -> str:
        return self.expected


class SubscriptionNotFound(NotifyError, LookupError):  # noqa: N818 (as above)
    status = 404

    def __init__(self, id: int) -> None:
        super().__init__(f"no subscription {id}")
        self.id = id


class NotificationNotFound(NotifyError, LookupError):  # noqa: N818 (as above)
    """No dead letter with this id (absent, or not dead)."""

    status = 404

    def __init__(self, id: int) -> None:
        super().__init__(f"no dead letter {id}")
        self.id = id


class DeliveryFailed(NotifyError):  # noqa: N818 (as above)
    """A channel could not deliver (the receiver refused, or could not be reached)."""

    # The receiver's failure, not the caller's: a gateway error if it ever reaches the API.
    status = 502

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
