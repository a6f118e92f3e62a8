"""The API's KPI models agree with the engine's types field for field (``services.api.kpi_models``
writes them out for the OpenAPI schema's names and documentation; this keeps them from drifting).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from services.api import kpi_models as api
from services.kpi import catalog, rating

# (engine type, API model, fields only the API shows, fields the API leaves out: why)
PAIRS: list[tuple[type, type[BaseModel], set[str], set[str]]] = [
    (catalog.Band, api.BandModel, set(), set()),
    # computed: whether the engine has a computation for it (engine.computed_kpis()); strict: how
    # the rating compares with the target, shown through the ratings themselves.
    (catalog.Kpi, api.CatalogEntry, {"computed"}, {"strict"}),
    (rating.Coverage, api.CoverageModel, set(), set()),
    (rating.BaselineRef, api.BaselineRefModel, set(), set()),
    (rating.KpiValue, api.KpiValueModel, set(), set()),
]
MODEL_OF = {engine_type: model for engine_type, model, _, _ in PAIRS}


def _split_none(hint: Any) -> tuple[Any, bool]:
    """``X | None`` as (X, True); anything else as (it, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return hint, False


def _disagreement(engine_hint: Any, model_hint: Any) -> str | None:
    """Why the API's type does not show the engine's (None: it does)."""
    engine_hint, engine_optional = _split_none(engine_hint)
    model_hint, model_optional = _split_none(model_hint)
    if engine_optional != model_optional:
        return f"optional in one only ({engine_hint} / {model_hint})"
    if dataclasses.is_dataclass(engine_hint):
        if MODEL_OF.get(engine_hint) is not model_hint:  # type: ignore[call-overload]
            return f"{engine_hint.__name__} shown as {model_hint}, not its model"
        return None
    if isinstance(engine_hint, type) and issubclass(engine_hint, enum.Enum):
        values = {member.value for member in engine_hint}
        if model_hint is str:
            return None  # any of the values, documented as text
        if typing.get_origin(model_hint) is Literal and set(typing.get_args(model_hint)) == values:
            return None
        return f"{engine_hint.__name__} {sorted(values)} shown as {model_hint}"
    return None if engine_hint == model_hint else f"{engine_hint} shown as {model_hint}"


@pytest.mark.parametrize(
    ("engine_type", "model", "api_only", "left_out"),
    PAIRS,
    ids=[f"{e.__name__}-{m.__name__}" for e, m, _, _ in PAIRS],
)
def test_api_model_agrees_with_engine_type(
    engine_type: type, model: type[BaseModel], api_only: set[str], left_out: set[str]
) -> None:
    engine_hints = typing.get_type_hints(engine_type)
    engine_fields = {f.name for f in dataclasses.fields(engine_type)}
    model_fields = model.model_fields
    assert set(model_fields) - engine_fields == api_only
    assert engine_fields - set(model_fields) == left_out
    wrong = {
        name: why
        for name in engine_fields & set(model_fields)
        if (why := _disagreement(engine_hints[name], model_fields[name].annotation)) is not None
    }
    assert wrong == {}


def test_a_drifted_model_is_caught() -> None:
    """The check fails on a field whose type or enum values differ (not a check that passes on
    anything)."""
    assert _disagreement(float | None, float) is not None
    assert _disagreement(rating.Rating, Literal["met", "warning", "missed"]) is not None
    assert _disagreement(rating.Coverage, api.BaselineRefModel) is not None
    assert _disagreement(int, float) is not None
    assert _disagreement(rating.Rating, Literal[tuple(r.value for r in rating.Rating)]) is None
