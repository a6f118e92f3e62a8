"""The API's KPI bodies: the engine's types (``services.kpi.catalog.Kpi``,
``services.kpi.rating.KpiValue`` with its ``Coverage`` and ``BaselineRef``) as pydantic models
with the descriptions and examples the OpenAPI schema shows.

They are written out rather than generated so the schema keeps its names and documentation;
``tests/services/api/test_kpi_models.py`` checks that each agrees with its engine type field for
field (names, types, the enums' values), so a field added to the engine fails there until the API
shows it (or says why not).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.kpi import engine
from services.kpi.catalog import Kpi

Period = Literal["hour", "day", "week", "month", "year"]


class BandModel(BaseModel):
    target: float
    warning: float


class CatalogEntry(BaseModel):
    id: str = Field(examples=["WAT-1"])
    name: str = Field(examples=["Non-revenue water"])
    domain: str = Field(examples=["water"])
    dimension: str = Field(examples=["D6.1"])
    subdimension: str
    follows: str
    definition: str
    unit: str = Field(examples=["%"])
    better: Literal["lower", "higher"]
    band: BandModel = Field(description="the catalog's default target and warning band")
    annual_band: BandModel | None = None
    target_source: str = Field(examples=["standard", "ours"])
    target_basis: Literal["period", "year"]
    coverage_threshold: float | None = Field(
        description="null: 0.75 up to a month, 0.90 for a year (EU 2008/50/EC data capture)"
    )
    computed: bool = Field(description="false while the KPI has no computation yet")


class CoverageModel(BaseModel):
    ratio: float = Field(description="what the threshold judges, 0..1", examples=[0.97])
    completeness: float | None = Field(description="valid ÷ expected readings, 0..1")
    sources_used: int
    sources_expected: int
    quality: Literal["ok", "partial", "insufficient"]


class BaselineRefModel(BaseModel):
    value: float
    period_start: datetime
    period_end: datetime
    change: float | None = Field(description="signed: positive means better")
    change_pct: float | None


class KpiValueModel(BaseModel):
    kpi_id: str = Field(examples=["AIR-1"])
    scope: str = Field(description="city or a district id", examples=["city"])
    period_start: datetime
    period_end: datetime
    value: float | None = Field(examples=[11.4])
    unit: str = Field(examples=["ug/m3"])
    rating: Literal["met", "warning", "missed", "insufficient_data"]
    target: float
    warning: float
    better: Literal["lower", "higher"]
    coverage: CoverageModel
    baseline: BaselineRefModel | None
    detail: dict[str, Any]


class KpiValues(BaseModel):
    kpi_id: str
    period_start: datetime
    period_end: datetime
    grain: Period | None = Field(description="null: one value per scope for the whole period")
    computed_at: datetime = Field(description="when these values were computed")
    values: list[KpiValueModel]


class CurrentValues(BaseModel):
    period: Period
    values: list[dict[str, Any]] = Field(
        description="KpiValue bodies with computed_at, as of the monitor's last refresh"
    )


def entry_of(kpi: Kpi) -> CatalogEntry:
    """The catalog's entry as the API shows it."""
    annual = kpi.annual_band
    return CatalogEntry(
        id=kpi.id,
        name=kpi.name,
        domain=kpi.domain.value,
        dimension=kpi.dimension,
        subdimension=kpi.subdimension,
        follows=kpi.follows,
        definition=kpi.definition,
        unit=kpi.unit,
        better=kpi.better.value,
        band=BandModel(target=kpi.band.target, warning=kpi.band.warning),
        annual_band=None
        if annual is None
        else BandModel(target=annual.target, warning=annual.warning),
        target_source=kpi.target_source,
        target_basis=kpi.target_basis.value,
        coverage_threshold=kpi.coverage_threshold,
        computed=kpi.id in engine.computed_kpis(),
    )
