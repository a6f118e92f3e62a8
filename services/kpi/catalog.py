"""The KPI catalog as code: ``../shared/KPIS.md`` "Core KPIs", one declarative entry per KPI.

Plain data, no database import: the dashboards and the API's catalog endpoint read it as is.
Each entry names its computation by KPI id; ``services.kpi.queries`` maps ids to the SQL that
computes them. Adding a KPI means one entry here and, at most, one query there.

Targets are the catalog's defaults; a city overrides them per KPI (and per district) in the
``kpi_targets`` table. ``target_source`` says whether a standard sets the target or we do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class KpiDomain(StrEnum):
    WATER = "water"
    ENERGY = "energy"
    WASTE = "waste"
    TRAFFIC = "traffic"
    ENVIRONMENT = "environment"
    ICT = "ict"


class Better(StrEnum):
    LOWER = "lower"
    HIGHER = "higher"


class TargetBasis(StrEnum):
    """What the target is stated for."""

    PERIOD = "period"  # the value of any period compares with the target as is
    YEAR = "year"  # an annual total (SAIFI, SAIDI): a shorter period's value is annualised


@dataclass(frozen=True, slots=True)
class Band:
    """``met`` on the good side of ``target``; ``warning`` up to ``warning``; ``missed`` beyond."""

    target: float
    warning: float


@dataclass(frozen=True, slots=True)
class Kpi:
    id: str
    name: str
    domain: KpiDomain
    dimension: str  # FG-SSC dimension and sub-dimension, e.g. "D6.1"
    subdimension: str
    follows: str  # the standard (or standards) it follows
    definition: str
    unit: str
    better: Better
    band: Band
    target_source: str  # "standard" or "ours"
    # The band for annual values where the standard sets a different one (WHO annual means).
    annual_band: Band | None = None
    target_basis: TargetBasis = TargetBasis.PERIOD
    # Coverage below which a value is ``insufficient_data``; None: 0.75 for periods up to a
    # month, 0.90 for a year or longer (EU 2008/50/EC data capture).
    coverage_threshold: float | None = None
    # Strict comparison with the target (Lden "< 53").
    strict: bool = False

    def threshold_for(self, period_days: float) -> float:
        if self.coverage_threshold is not None:
            return self.coverage_threshold
        return 0.90 if period_days >= 365 else 0.75


_AIR_FOLLOWS = "WHO 2021 air quality guidelines; U4SSC air pollution; ISO 37120"
_AIR_DEFINITION = (
    "Mean of each valid station-day (at least 75 % of expected readings); the district value is "
    "its worst valid station; a longer period takes the mean of valid station-days."
)

# How a cumulative register's index at a period boundary is read (WAT-1, ENE-3; issue 10).
_REGISTER_INDEX = (
    "A register's index at the start or end of a period is interpolated from the readings "
    "that bracket that moment (the next period's first reading included); a register without "
    "a reading on each side within 3 reporting intervals of it is unread. In a period still "
    "running, the index now is the last reading carried on at the register's latest rate."
)
# Which feeders SAIFI and SAIDI can judge (issue 10).
_FEEDERS_JUDGED = (
    "Customers of feeders that cannot be judged (no power or voltage reading in the period) "
    "leave both the numerator and the denominator and show in the coverage."
)

_CATALOG: tuple[Kpi, ...] = (
    Kpi(
        id="WAT-1",
        name="Non-revenue water",
        domain=KpiDomain.WATER,
        dimension="D6.1",
        subdimension="Water and sanitation",
        follows='U4SSC "Water supply loss"; ISO 37120 water loss',
        definition=(
            "SIV = integral of DMA inflow over the period; C = sum over customer meters of "
            "(index at end - index at start); 100 (SIV - C) / SIV. Needs at least 98 % of the "
            "DMA's customer meters with both indexes. " + _REGISTER_INDEX
        ),
        unit="%",
        better=Better.LOWER,
        band=Band(20.0, 30.0),
        target_source="ours",
        coverage_threshold=0.98,
    ),
    Kpi(
        id="WAT-2",
        name="Drinking-water compliance",
        domain=KpiDomain.WATER,
        dimension="D6.1",
        subdimension="Water and sanitation",
        follows="WHO guidelines for drinking-water quality",
        definition=(
            "Share of quality reading sets (same station, same time bucket) with "
            "0.2 <= free chlorine <= 5 mg/l, turbidity <= 1 NTU and 6.5 <= pH <= 8.5."
        ),
        unit="%",
        better=Better.HIGHER,
        band=Band(99.0, 95.0),
        target_source="ours",
    ),
    Kpi(
        id="ICT-1",
        name="Smart electricity meters reporting",
        domain=KpiDomain.ICT,
        dimension="D1.2",
        subdimension="ICT infrastructure: electricity supply ICT monitoring",
        follows='U4SSC "Smart electricity meters"',
        definition=(
            "Smart electricity meters with at least one valid reading in the period, divided by "
            "the electricity meters in the registry."
        ),
        unit="%",
        better=Better.HIGHER,
        band=Band(80.0, 50.0),
        target_source="standard",
    ),
    Kpi(
        id="ENE-1",
        name="SAIFI",
        domain=KpiDomain.ENERGY,
        dimension="D6.3",
        subdimension="Electricity supply",
        follows='IEEE 1366; U4SSC "Electricity system outage frequency"',
        definition=(
            "Sustained interruptions (feeder power or voltage at zero for at least 5 minutes; "
            "shorter ones are momentary and excluded): sum of customers interrupted divided by "
            "customers served (customers per feeder from the registry). " + _FEEDERS_JUDGED
        ),
        unit="interruptions/customer",
        better=Better.LOWER,
        band=Band(1.0, 2.0),
        target_source="ours",
        target_basis=TargetBasis.YEAR,
    ),
    Kpi(
        id="ENE-2",
        name="SAIDI",
        domain=KpiDomain.ENERGY,
        dimension="D6.3",
        subdimension="Electricity supply",
        follows='IEEE 1366; U4SSC "Electricity system outage time" (CAIDI = SAIDI / SAIFI)',
        definition=(
            "Sum of (customers interrupted x minutes) divided by customers served; "
            "CAIDI = SAIDI / SAIFI is reported alongside. " + _FEEDERS_JUDGED
        ),
        unit="min",
        better=Better.LOWER,
        band=Band(60.0, 120.0),
        target_source="ours",
        target_basis=TargetBasis.YEAR,
    ),
    Kpi(
        id="ENE-3",
        name="Renewable share of electricity",
        domain=KpiDomain.ENERGY,
        dimension="D2.3",
        subdimension="Energy",
        follows="U4SSC renewable energy consumption; ISO 37120",
        definition=(
            "(E_pv + f_grid E_feeder) / (E_feeder + E_pv), energies from cumulative registers; "
            "f_grid = the grid's renewable fraction from the registry (default 0). "
            + _REGISTER_INDEX
        ),
        unit="%",
        better=Better.HIGHER,
        # KPIS.md leaves the target to city policy: this default is ours, meant to be overridden.
        band=Band(30.0, 15.0),
        target_source="ours",
    ),
    Kpi(
        id="AIR-1",
        name="PM2.5, 24-hour mean",
        domain=KpiDomain.ENVIRONMENT,
        dimension="D2.1",
        subdimension="Air quality",
        follows=_AIR_FOLLOWS,
        definition=_AIR_DEFINITION,
        unit="ug/m3",
        better=Better.LOWER,
        band=Band(15.0, 25.0),
        annual_band=Band(5.0, 10.0),
        target_source="standard",
    ),
    Kpi(
        id="AIR-2",
        name="PM10, 24-hour mean",
        domain=KpiDomain.ENVIRONMENT,
        dimension="D2.1",
        subdimension="Air quality",
        follows=_AIR_FOLLOWS,
        definition=_AIR_DEFINITION,
        unit="ug/m3",
        better=Better.LOWER,
        band=Band(45.0, 50.0),
        annual_band=Band(15.0, 20.0),
        target_source="standard",
    ),
    Kpi(
        id="AIR-3",
        name="NO2, 24-hour mean",
        domain=KpiDomain.ENVIRONMENT,
        dimension="D2.1",
        subdimension="Air quality",
        follows=_AIR_FOLLOWS,
        definition=_AIR_DEFINITION + " Stored in ug/m3 (ppb x 1.9 at ingest).",
        unit="ug/m3",
        better=Better.LOWER,
        band=Band(25.0, 50.0),
        annual_band=Band(10.0, 20.0),
        target_source="standard",
    ),
    Kpi(
        id="NOI-1",
        name="Road noise Lden",
        domain=KpiDomain.ENVIRONMENT,
        dimension="D2.5",
        subdimension="Noise",
        follows="WHO 2018 environmental noise guidelines; EU 2002/49/EC; U4SSC noise exposure",
        definition=(
            "Energy means per period, day 07-19, evening 19-23, night 23-07 (local time): "
            "Lden = 10 log10((12 10^(Ld/10) + 4 10^((Le+5)/10) + 8 10^((Ln+10)/10)) / 24); a "
            "period longer than a day takes the energy mean of daily values. The district value "
            "is its loudest station."
        ),
        unit="dB",
        better=Better.LOWER,
        band=Band(53.0, 55.0),
        target_source="standard",
        strict=True,
    ),
    Kpi(
        id="TRA-1",
        name="Travel time index",
        domain=KpiDomain.TRAFFIC,
        dimension="D6.8",
        subdimension="Transport",
        follows="U4SSC travel time index",
        definition=(
            "Over the weekday peak periods (city settings): sum n L / v divided by sum n L / "
            "v_free (vehicle-hours weighted; n count, L segment length, v interval mean speed, "
            "v_free the segment's free-flow speed)."
        ),
        unit="ratio",
        better=Better.LOWER,
        band=Band(1.5, 2.5),
        target_source="standard",
    ),
    Kpi(
        id="TRA-2",
        name="Traffic monitoring coverage",
        domain=KpiDomain.ICT,
        dimension="D1.2",
        subdimension="ICT infrastructure: traffic monitoring",
        follows="U4SSC traffic monitoring",
        definition=(
            "Kilometres of major road segments whose detectors delivered at least 75 % of "
            "expected intervals, divided by kilometres of major road segments."
        ),
        unit="%",
        better=Better.HIGHER,
        band=Band(90.0, 60.0),
        target_source="ours",
    ),
    Kpi(
        id="WST-1",
        name="Container overflow rate",
        domain=KpiDomain.WASTE,
        dimension="D2.5",
        subdimension="Solid waste",
        follows="ours (no standard)",
        definition=(
            "Container-days whose maximum fill reached the overflow threshold (city settings, "
            "default 1.0) divided by observed container-days."
        ),
        unit="%",
        better=Better.LOWER,
        band=Band(2.0, 5.0),
        target_source="ours",
    ),
)

KPIS: Mapping[str, Kpi] = MappingProxyType({k.id: k for k in _CATALOG})


def _check() -> None:
    for kpi in _CATALOG:
        for band in (kpi.band, kpi.annual_band):
            if band is None:
                continue
            ok = (
                band.warning >= band.target
                if kpi.better is Better.LOWER
                else (band.warning <= band.target)
            )
            if not ok:
                raise RuntimeError(f"{kpi.id}: the warning band must lie on the bad side")


_check()
