"""The alert engine: rules over sensor rollups, the registry and KPI values; alerts with a
lifecycle (raised, acknowledged, cleared) stored in ``alerts``, each transition an ``alert`` event.

Public front (the API and the CLI use only these names):

- rules: :class:`Rule`, :func:`parse_rule`, :func:`load_rules`, :func:`get_rule`,
  :func:`upsert_rule`, :func:`set_enabled`; :data:`DEFAULT_RULES`, :func:`install_defaults`;
- evaluation: :func:`evaluate` -> :class:`EvaluationResult`;
- lifecycle: :func:`list_alerts`, :func:`get_alert`, :func:`acknowledge`, :func:`clear` ->
  :class:`Alert`;
- errors: :class:`AlertError` and its subclasses.

May import ``services.storage``, ``gateway`` (the sensor-kind catalog) and ``services.kpi``'s
catalog; never the API or ingestion.
"""

from __future__ import annotations

from .defaults import DEFAULT_RULES, InstallResult, install_defaults
from .errors import (
    AlertError,
    AlertNotFound,
    InvalidArgument,
    InvalidRule,
    InvalidTransition,
    RuleNotFound,
)
from .evaluate import evaluate
from .lifecycle import acknowledge, clear, get_alert, list_alerts
from .model import OPEN, Alert, AlertState, EvaluationResult
from .rules import (
    Condition,
    Rule,
    Severity,
    Subject,
    get_rule,
    load_rules,
    parse_rule,
    set_enabled,
    upsert_rule,
)

__all__ = [
    "DEFAULT_RULES",
    "OPEN",
    "Alert",
    "AlertError",
    "AlertNotFound",
    "AlertState",
    "Condition",
    "EvaluationResult",
    "InstallResult",
    "InvalidArgument",
    "InvalidRule",
    "InvalidTransition",
    "Rule",
    "RuleNotFound",
    "Severity",
    "Subject",
    "acknowledge",
    "clear",
    "evaluate",
    "get_alert",
    "get_rule",
    "install_defaults",
    "list_alerts",
    "load_rules",
    "parse_rule",
    "set_enabled",
    "upsert_rule",
]
