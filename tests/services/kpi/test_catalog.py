"""Every KPI of the catalog has a computation, and every computation a catalog entry.

Fails until environment, traffic and waste KPIs (AIR-*, NOI-1, TRA-*, WST-1) are computed.
"""

from __future__ import annotations

import pytest

from services.kpi.catalog import KPIS
from services.kpi.queries import COMPUTATIONS


@pytest.mark.parametrize("kpi_id", list(KPIS))
def test_every_catalog_kpi_has_a_computation(kpi_id: str) -> None:
    assert kpi_id in COMPUTATIONS, f"{kpi_id} has no computation in services.kpi.queries"


def test_every_computation_is_in_the_catalog() -> None:
    assert set(COMPUTATIONS) <= set(KPIS)
