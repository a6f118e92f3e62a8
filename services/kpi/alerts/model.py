"""An alert as the engine, the API and the live stream see it (a row of ``alerts``).

Lifecycle: ``raised`` -> ``acknowledged`` (who, when, a comment) -> ``cleared``; ``raised`` ->
``cleared`` directly too. An alert is cleared by a person (``cleared_by`` set) or by the engine
when its condition ended (``cleared_by`` None). A cleared alert is final: if the condition holds
again, the engine raises a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from .rules import Severity


class AlertState(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


# list_alerts(state="open"): raised or acknowledged.
OPEN = "open"


class Alert(BaseModel):
    """One alert; ``model_dump(mode="json")`` is its API body and its live-stream event."""

    model_config = ConfigDict(frozen=True)

    id: int
    rule_id: str
    subject_id: str
    district_id: str | None
    domain: str | None
    state: AlertState
    severity: Severity
    message: str
    value: float | None
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_comment: str | None
    cleared_at: datetime | None
    cleared_by: str | None
    clear_comment: str | None
    updated_at: datetime

    @property
    def open(self) -> bool:
        return self.state is not AlertState.CLEARED


ALERT_COLUMNS = ", ".join(Alert.model_fields)


def alert_from_row(row: dict[str, Any]) -> Alert:
    return Alert.model_validate(row)


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """What one evaluation did: alerts raised and cleared, alerts open afterwards, conditions
    holding but not yet for their rule's duration, rules evaluated, rules skipped as invalid."""

    raised: int = 0
    cleared: int = 0
    open: int = 0
    pending: int = 0
    rules: int = 0
    invalid_rules: tuple[str, ...] = field(default_factory=tuple)
