"""The computations behind the catalog: one SQL query per KPI, over the rollups and the registry.

Each domain module exposes ``COMPUTATIONS``, KPI id -> :data:`services.kpi.model.Computation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..model import Computation
from . import energy, environment, ict, traffic, waste, water

COMPUTATIONS: Mapping[str, Computation] = MappingProxyType(
    {
        **water.COMPUTATIONS,
        **ict.COMPUTATIONS,
        **energy.COMPUTATIONS,
        **environment.COMPUTATIONS,
        **traffic.COMPUTATIONS,
        **waste.COMPUTATIONS,
    }
)
