"""Rule validation (every problem named, each with its field) and storage."""

from __future__ import annotations

from typing import Any

import pytest

from services.kpi.alerts import (
    InvalidRule,
    Rule,
    RuleNotFound,
    get_rule,
    load_rules,
    parse_rule,
    set_enabled,
    upsert_rule,
)

from .conftest import DEFAULTS, Conn

BASE: dict[str, Any] = {
    "id": "r1",
    "name": "a rule",
    "subject": "sensor",
    "condition": "above",
    "kind": "waste_container",
    "quantity": "fill",
    "threshold": 0.9,
}

INVALID = [
    ({"id": "Bad Id"}, "id: String should match pattern"),
    ({"condition": "sideways"}, "condition: Input should be"),
    ({"severity": "fatal"}, "severity: Input should be"),
    ({"duration_s": -1}, "duration_s: Input should be greater than or equal to 0"),
    ({"kind": "toaster"}, "kind 'toaster' is not a sensor kind"),
    ({"quantity": "ph"}, "a waste_container does not measure ph"),
    ({"quantity": None}, "a above rule needs a quantity"),
    ({"threshold": None}, "a above rule needs a threshold"),
    ({"clear_threshold": 0.95}, "clear_threshold 0.95 must be at or below threshold 0.9"),
    ({"condition": "below", "clear_threshold": 0.5}, "must be at or above threshold 0.9"),
    ({"subject": "gateway"}, "condition above does not apply to a gateway"),
    ({"subject": "kpi", "condition": "kpi_band", "threshold": None}, "names no kind or quantity"),
    ({"kpi_id": "XYZ-9"}, "kpi_id 'XYZ-9' is not in the KPI catalog"),
    ({"params": {"window": 60}}, "params.window: Extra inputs are not permitted"),
    ({"params": {"min_coverage": 2}}, "params.min_coverage: Input should be less than"),
    ({"params": {"relative_to": "lanes"}}, "params.relative_to: Input should be"),
    (
        {"condition": "outside", "threshold": None, "params": {"low": 2, "high": 1}},
        "params: low 2 must be below high 1",
    ),
    (
        {
            "condition": "outside",
            "threshold": None,
            "params": {"low": 1, "high": 2, "clear_low": 0},
        },
        "need low <= clear_low <= clear_high <= high",
    ),
    ({"condition": "outside", "params": {"low": 1, "high": 2}}, "takes no threshold"),
    ({"condition": "outside", "threshold": None}, "params.low: Field required"),
    ({"condition": "silent"}, "a silent rule takes no threshold"),
    (
        {"condition": "night_flow", "quantity": "fill", "kind": None, "threshold": 1.3},
        "a night_flow rule watches the quantity flow",
    ),
    (
        {
            "condition": "night_flow",
            "kind": "water_inflow",
            "quantity": "flow",
            "params": {"start": "23:00", "end": "04:00"},
        },
        "the night window must not span midnight",
    ),
    (
        {
            "subject": "kpi",
            "condition": "kpi_band",
            "kind": None,
            "quantity": None,
            "threshold": None,
            "params": {"ratings": ["met"]},
        },
        "params.ratings.0: Input should be 'missed' or 'warning'",
    ),
]


@pytest.mark.parametrize(("change", "problem"), INVALID, ids=[p for _, p in INVALID])
def test_an_invalid_rule_names_its_problem(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidRule) as error:
        parse_rule({**BASE, **change})
    assert any(problem in line for line in error.value.problems), error.value.problems
    assert str(error.value).startswith("alert rule")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidRule) as error:
        parse_rule({**BASE, "severity": "fatal", "duration_s": -1})
    assert len(error.value.problems) == 2
    # The rule's own checks run once its fields are well-formed; then all of them report.
    with pytest.raises(InvalidRule) as error:
        parse_rule({**BASE, "kind": "toaster", "threshold": None, "params": {"x": 1}})
    assert len(error.value.problems) == 3


def test_defaults_fill_the_params_and_the_clear_threshold() -> None:
    rule = parse_rule(BASE)
    assert rule.clear_threshold == 0.9
    assert rule.params == {"window_s": 0.0, "min_coverage": 0.0}
    assert parse_rule({**BASE, "id": "r2"}).model_dump()["params"] == rule.params


def test_upsert_load_get_and_enable(db: Conn) -> None:
    rule = parse_rule(BASE)
    assert upsert_rule(db, rule)
    assert not upsert_rule(db, rule.model_copy(update={"threshold": 0.5}), overwrite=False)
    assert get_rule(db, "r1") == rule
    changed = parse_rule({**BASE, "threshold": 0.95, "severity": "critical"})
    assert upsert_rule(db, changed)
    assert load_rules(db) == [changed]
    set_enabled(db, "r1", False)
    assert load_rules(db, enabled=True) == []
    assert [r.id for r in load_rules(db, enabled=False)] == ["r1"]
    with pytest.raises(RuleNotFound):
        get_rule(db, "nope")
    with pytest.raises(RuleNotFound):
        set_enabled(db, "nope", True)


def test_a_rule_for_an_unknown_district_is_refused(db: Conn) -> None:
    with pytest.raises(InvalidRule, match="no district 'd9'"):
        upsert_rule(db, parse_rule({**BASE, "district_id": "d9"}))
    assert load_rules(db) == []


def test_a_row_broken_in_the_table_is_reported_or_skipped(db: Conn) -> None:
    upsert_rule(db, DEFAULTS["waste-fire"])
    upsert_rule(db, DEFAULTS["waste-overflow"])
    db.execute("UPDATE alert_rules SET params = '{\"low\": 1}' WHERE id = 'waste-fire'")
    with pytest.raises(InvalidRule, match=r"params\.low: Extra inputs"):
        load_rules(db)
    invalid: list[InvalidRule] = []
    assert [r.id for r in load_rules(db, invalid=invalid)] == ["waste-overflow"]
    assert [e.rule_id for e in invalid] == ["waste-fire"]


def test_the_default_rules_are_valid_and_documented() -> None:
    for rule in DEFAULTS.values():
        assert isinstance(rule, Rule)
        assert rule.builtin
        assert len(rule.description) > 40, rule.id
    assert len(DEFAULTS) == 16
