"""The one-line message of a raised alert, written for the operator who reads it on a wall screen:
what, where, how far beyond the limit, in the unit people use (bar, l/s, km/h, %), not the
canonical storage unit."""

from __future__ import annotations

from typing import Any

from gateway.kinds import QUANTITIES

from ..catalog import KPIS
from .rules import Condition, OutsideParams, Rule, ValueParams

# quantity -> (display unit, factor from the canonical unit)
_DISPLAY: dict[str, tuple[str, float]] = {
    "pressure": ("bar", 1e-5),
    "flow": ("l/s", 1000.0),
    "speed": ("km/h", 3.6),
    "fill": ("%", 100.0),
    "occupancy": ("%", 100.0),
    "power": ("kW", 1e-3),
}


def _amount(quantity: str, value: float) -> str:
    unit, factor = _DISPLAY.get(quantity, (QUANTITIES[quantity].unit, 1.0))
    shown = value * factor
    text = f"{shown:.3g}" if abs(shown) < 1000 else f"{shown:.0f}"
    return f"{text} %" if unit == "%" else f"{text} {unit}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def describe(rule: Rule, subject_id: str, value: float | None, detail: dict[str, Any]) -> str:
    """The message of the alert ``rule`` raises for ``subject_id``."""
    head = f"{rule.name}: {subject_id}"
    if rule.condition is Condition.SILENT:
        silence = float(detail.get("silence_s") or rule.params.get("min_silence_s", 0.0))
        if rule.subject == "gateway":
            if value is None:
                return f"{head} never seen"
            return f"{head} not seen for {_minutes(value)}"
        if value is None:
            return f"{head} sent no reading for {_minutes(silence)} or more"
        return f"{head} sent no reading for {_minutes(value)}"
    if rule.condition is Condition.NIGHT_FLOW:
        return (
            f"{head} minimum night flow {_amount('flow', float(detail['night_min']))} "
            f"on {detail['night']} is {value:.2f}x the usual "
            f"{_amount('flow', float(detail['usual_min']))}"
        )
    if rule.condition is Condition.KPI_BAND:
        kpi = KPIS.get(str(detail.get("kpi_id")))
        shown = "no value" if value is None else f"{value:.4g} {kpi.unit if kpi else ''}".strip()
        name = f"{kpi.id} {kpi.name}" if kpi else detail.get("kpi_id")
        return (
            f"{rule.name}: {name}, {detail.get('scope')} ({detail.get('period')}), {shown}, "
            f"rated {detail.get('rating')}"
        )
    return _valued(rule, head, value)


def _valued(rule: Rule, head: str, value: float | None) -> str:
    assert rule.quantity is not None
    typed: ValueParams = rule.typed_params()
    what = rule.quantity
    if typed.window_s > 0:
        what = f"{_minutes(typed.window_s)} mean {what}"
    if value is None:
        return f"{head} {what}: no value"
    if typed.relative_to is not None:
        reference = typed.relative_to.replace("_", " ")
        shown = f"{value * 100:.0f} % of {reference}"
        limit = f"{(rule.threshold or 0.0) * 100:.0f} %"
    else:
        shown = _amount(rule.quantity, value)
        limit = _amount(rule.quantity, rule.threshold or 0.0)
    if isinstance(typed, OutsideParams):
        band = f"{_amount(rule.quantity, typed.low)} .. {_amount(rule.quantity, typed.high)}"
        return f"{head} {what} {shown}, outside {band}"
    relation = "at or above" if rule.condition is Condition.ABOVE else "at or below"
    return f"{head} {what} {shown}, {relation} {limit}"
