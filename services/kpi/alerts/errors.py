"""Errors of the alert engine. ``AlertError`` is the base; each error carries its subject as data.

Each also says, as a :class:`~services.errors.DomainError`, how the API answers it, so the API
maps them all in one place: a request naming something that does not exist (``AlertNotFound``,
``RuleNotFound``: 404), a request the current state refuses (``InvalidTransition``: 409, with the
alert's ``state``); ``InvalidRule`` and ``InvalidArgument`` are bad input (422, the latter naming
its query parameter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.errors import DomainError, query_field

# InvalidArgument's names that are query parameters of GET /v1/alerts.
_QUERY_ARGUMENTS = frozenset({"state", "severity", "limit"})


class AlertError(DomainError):
    """Base of the alert engine's errors."""


class AlertNotFound(AlertError, LookupError):  # noqa: N818 (the API's names)
    """No alert has this id."""

    status = 404

    def __init__(self, alert_id: int) -> None:
        super().__init__(f"no alert {alert_id}")
        self.alert_id = alert_id


class RuleNotFound(AlertError, LookupError):  # noqa: N818 (the API's names)
    """No alert rule has this id."""

    status = 404

    def __init__(self, rule_id: str) -> None:
        super().__init__(f"no alert rule {rule_id!r}")
        self.rule_id = rule_id


class InvalidTransition(AlertError):  # noqa: N818 (the API's names)
    """The alert's state does not allow the requested action (e.g. acknowledging a cleared one)."""

    status = 409

    def __init__(self, alert_id: int, state: str, action: str) -> None:
        super().__init__(f"alert {alert_id} is {state}: it cannot be {action}")
        self.alert_id = alert_id
        self.state = state
        self.action = action

    def extensions(self) -> dict[str, Any]:
        return {"state": self.state}


class InvalidRule(AlertError, ValueError):  # noqa: N818 (the API's names)
    """A rule definition is inconsistent; ``problems`` lists every reason, one a line."""

    def __init__(self, rule_id: str | None, problems: Sequence[str]) -> None:
        name = f"alert rule {rule_id!r}" if rule_id else "alert rule"
        super().__init__(f"{name} is invalid:\n  " + "\n  ".join(problems))
        self.rule_id = rule_id
        self.problems = tuple(problems)


class InvalidArgument(AlertError, ValueError):  # noqa: N818 (the API's names)
    """A listing filter or an action's argument has a value outside its domain."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        super().__init__(f"{name}={value!r}: {allowed}")
        self.name = name
        self.value = value
        self.allowed = allowed

    @property
    def request_field(self) -> str | None:
        # The listing's filters are the API's query parameters of the same names; ``by`` (who
        # acts) comes from the caller's key, not from the request.
        return query_field(self.name) if self.name in _QUERY_ARGUMENTS else None
