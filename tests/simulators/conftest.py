"""Shared helpers: a small city's manifest and models, a fixed weekday in summer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from simulators.city import Manifest, build_manifest, small_city
from simulators.models import SensorModel, build_models
from simulators.scenario import Scenario

# Wednesday 2025-06-18, 00:00 local (the city runs at UTC+1).
WEDNESDAY = datetime(2025, 6, 17, 23, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0
DAY = 86_400.0


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return build_manifest(small_city(), seed=7)


ModelsOf = Callable[[Scenario | None], dict[str, SensorModel]]


@pytest.fixture
def models_of(manifest: Manifest) -> ModelsOf:
    def build(scenario: Scenario | None = None) -> dict[str, SensorModel]:
        return build_models(manifest, scenario or Scenario(), seed=7)

    return build


def series(model: SensorModel, quantity: str, start: float, hours: float, step: float = 60.0):
    """[(hour since start, value)] of one quantity."""
    index = model.quantities.index(quantity)
    out = []
    t = start
    while t < start + hours * HOUR:
        out.append(((t - start) / HOUR, model.sample(t)[index]))
        t += step
    return out
