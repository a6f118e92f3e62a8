"""The default rules every city starts with, and ``install_defaults``.

Where a limit comes from a standard, the rule says which (``../shared/KPIS.md`` holds the same
figures for the KPIs); where it is ours, it says so. Hysteresis bands and minimum durations are
ours throughout: they are set so that a noisy sensor hovering at a limit raises one alert, not
one a minute.

``install_defaults`` inserts the builtin rules that are missing and leaves the others as they
are: a city that raised a threshold or disabled a rule keeps its edit across upgrades.
``reset=True`` puts the shipped definitions back (``urbanpulse alerts install-defaults --reset``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from .rules import Condition, Rule, Severity, Subject, upsert_rule


def _sensor(
    rule_id: str,
    name: str,
    description: str,
    *,
    kind: str | None,
    quantity: str | None,
    condition: Condition,
    threshold: float | None = None,
    clear: float | None = None,
    duration_s: float = 0.0,
    severity: Severity = Severity.WARNING,
    **params: Any,
) -> Rule:
    return Rule(
        id=rule_id,
        name=name,
        description=description,
        subject=Subject.SENSOR,
        condition=condition,
        kind=kind,
        quantity=quantity,
        threshold=threshold,
        clear_threshold=clear,
        duration_s=duration_s,
        severity=severity,
        builtin=True,
        params=params,
    )


DEFAULT_RULES: tuple[Rule, ...] = (
    _sensor(
        "water-leak-night-flow",
        "Suspected leak",
        "The DMA's minimum night flow (02:00-04:00 local) is 1.3 times the median of the "
        "previous 7 nights' minima or more (IWA minimum-night-flow practice; factor ours). "
        "Clears below 1.1 times.",
        kind="water_inflow",
        quantity="flow",
        condition=Condition.NIGHT_FLOW,
        threshold=1.3,
        clear=1.1,
    ),
    _sensor(
        "water-low-pressure",
        "Low network pressure",
        "Pressure below 2 bar for 5 minutes (ours: a common minimum service pressure). "
        "Clears above 2.2 bar.",
        kind="water_pressure",
        quantity="pressure",
        condition=Condition.BELOW,
        threshold=200_000.0,
        clear=220_000.0,
        duration_s=300.0,
    ),
    _sensor(
        "water-quality-ph",
        "Drinking water pH out of limits",
        "pH outside 6.5-8.5 for 10 minutes (WHO drinking-water guidelines, as KPI WAT-2). "
        "Clears back within 6.6-8.4.",
        kind="water_quality",
        quantity="ph",
        condition=Condition.OUTSIDE,
        duration_s=600.0,
        severity=Severity.CRITICAL,
        low=6.5,
        high=8.5,
        clear_low=6.6,
        clear_high=8.4,
    ),
    _sensor(
        "water-quality-chlorine",
        "Free chlorine out of limits",
        "Free chlorine outside 0.2-5 mg/l for 10 minutes (WHO guidelines: 5 mg/l maximum, "
        "0.2 mg/l residual at the point of delivery; as KPI WAT-2). Clears within 0.25-4.8.",
        kind="water_quality",
        quantity="chlorine",
        condition=Condition.OUTSIDE,
        duration_s=600.0,
        severity=Severity.CRITICAL,
        low=0.2,
        high=5.0,
        clear_low=0.25,
        clear_high=4.8,
    ),
    _sensor(
        "water-quality-turbidity",
        "Turbidity over 1 NTU",
        "Turbidity above 1 NTU for 10 minutes (WHO guidelines, as KPI WAT-2). "
        "Clears below 0.8 NTU.",
        kind="water_quality",
        quantity="turbidity",
        condition=Condition.ABOVE,
        threshold=1.0,
        clear=0.8,
        duration_s=600.0,
        severity=Severity.CRITICAL,
    ),
    _sensor(
        "waste-near-full",
        "Container near full",
        "Fill at 90 % or more (ours): schedule a collection. Clears below 80 % (emptied).",
        kind="waste_container",
        quantity="fill",
        condition=Condition.ABOVE,
        threshold=0.9,
        clear=0.8,
        severity=Severity.INFO,
    ),
    _sensor(
        "waste-overflow",
        "Container overflowing",
        "Fill at 100 % or more (the overflow threshold of KPI WST-1). Clears below 90 %.",
        kind="waste_container",
        quantity="fill",
        condition=Condition.ABOVE,
        threshold=1.0,
        clear=0.9,
    ),
    _sensor(
        "waste-fire",
        "Container fire",
        "Container temperature at 70 °C or more (ours: far above any weather; waste fires "
        "smoulder at 70 °C and up). Clears below 60 °C.",
        kind="waste_container",
        quantity="temperature",
        condition=Condition.ABOVE,
        threshold=70.0,
        clear=60.0,
        severity=Severity.CRITICAL,
    ),
    _sensor(
        "energy-feeder-outage",
        "Feeder outage",
        "Feeder voltage at zero (at or below 1 V) for a minute or more; KPIs ENE-1/ENE-2 count "
        "it as sustained from 5 minutes (IEEE 1366). Clears above 180 V (supply back).",
        kind="feeder_meter",
        quantity="voltage",
        condition=Condition.BELOW,
        threshold=1.0,
        clear=180.0,
        duration_s=60.0,
        severity=Severity.CRITICAL,
    ),
    _sensor(
        "traffic-congestion",
        "Congestion",
        "Mean speed below 40 % of the segment's free-flow speed for 10 minutes (ours; "
        "KPI TRA-1 uses the same free-flow speed). Clears above 50 %.",
        kind="traffic_counter",
        quantity="speed",
        condition=Condition.BELOW,
        threshold=0.4,
        clear=0.5,
        duration_s=600.0,
        severity=Severity.INFO,
        relative_to="free_flow_speed",
    ),
    _sensor(
        "air-pm25-who",
        "PM2.5 over the WHO 24-hour guideline",
        "PM2.5 24-hour mean above 15 µg/m3 (WHO 2021 AQG, as KPI AIR-1), from a window with "
        "at least 75 % of the expected readings. Clears below 13.5 µg/m3.",
        kind="air_quality",
        quantity="pm25",
        condition=Condition.ABOVE,
        threshold=15.0,
        clear=13.5,
        window_s=86_400.0,
        min_coverage=0.75,
    ),
    _sensor(
        "air-pm10-who",
        "PM10 over the WHO 24-hour guideline",
        "PM10 24-hour mean above 45 µg/m3 (WHO 2021 AQG, as KPI AIR-2), 75 % coverage. "
        "Clears below 40 µg/m3.",
        kind="air_quality",
        quantity="pm10",
        condition=Condition.ABOVE,
        threshold=45.0,
        clear=40.0,
        window_s=86_400.0,
        min_coverage=0.75,
    ),
    _sensor(
        "air-no2-who",
        "NO2 over the WHO 24-hour guideline",
        "NO2 24-hour mean above 25 µg/m3 (WHO 2021 AQG, as KPI AIR-3), 75 % coverage. "
        "Clears below 22.5 µg/m3.",
        kind="air_quality",
        quantity="no2",
        condition=Condition.ABOVE,
        threshold=25.0,
        clear=22.5,
        window_s=86_400.0,
        min_coverage=0.75,
    ),
    _sensor(
        "sensor-silent",
        "Sensor silent",
        "No reading from an active sensor for 3 nominal intervals and at least 15 minutes "
        "(ours). Clears with its next reading.",
        kind=None,
        quantity=None,
        condition=Condition.SILENT,
        intervals=3.0,
        min_silence_s=900.0,
    ),
    Rule(
        id="gateway-silent",
        name="Gateway silent",
        description="An active gateway not seen for 15 minutes (ours). Clears when it is seen.",
        subject=Subject.GATEWAY,
        condition=Condition.SILENT,
        severity=Severity.CRITICAL,
        builtin=True,
        params={"min_silence_s": 900.0},
    ),
    Rule(
        id="kpi-missed",
        name="KPI off target",
        description="A KPI's current value rated missed (beyond its warning band, KPIS.md). "
        "Clears when rated met or warning again.",
        subject=Subject.KPI,
        condition=Condition.KPI_BAND,
        builtin=True,
        params={"ratings": ["missed"]},
    ),
)


@dataclass(frozen=True, slots=True)
class InstallResult:
    inserted: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def install_defaults(conn: psycopg.Connection[Any], *, reset: bool = False) -> InstallResult:
    """Insert the default rules that are missing; idempotent. A default rule already present is
    kept as the city edited it, unless ``reset`` (then it is put back as shipped). Atomic."""
    result = InstallResult()
    with conn.transaction():
        existing = {
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM alert_rules WHERE id = ANY(%s)", ([r.id for r in DEFAULT_RULES],)
            )
        }
        for rule in DEFAULT_RULES:
            if rule.id not in existing:
                upsert_rule(conn, rule, overwrite=False)
                result.inserted.append(rule.id)
            elif reset:
                upsert_rule(conn, rule, overwrite=True)
                result.reset.append(rule.id)
            else:
                result.kept.append(rule.id)
    return result
