"""City overview: every KPI against its band, the sensor and gateway map, open alerts, coverage."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from services.kpi import catalog
from services.kpi.alerts.defaults import DEFAULT_RULES
from services.kpi.catalog import Kpi
from services.storage import kpi_current

from .panels import (
    GREEN,
    ORANGE,
    RED,
    bars,
    district_variable,
    domain_variable,
    kpi_stat,
    named,
    period_variable,
    status_map,
    steps,
    table_panel,
)
from .sql import DISTRICTS, DOMAINS

# Sensor and gateway states on the map (and their words, so colour is not the only cue).
STATES: dict[float, tuple[str, str]] = {
    0: ("reporting", GREEN),
    1: ("late", ORANGE),
    2: ("silent", RED),
    3: ("out of service", "gray"),
}


def kpi_sql(kpi: Kpi, period: str = "$period") -> str:
    """The city's current value of ``kpi``, its target and the change since the baseline
    (the current values, kept by the monitor and owned by ``services.storage.kpi_current``;
    positive change is better)."""
    return f"""
SELECT value AS "value, {kpi.unit}",
       (body->>'target')::float8 AS target,
       (body->'baseline'->>'change_pct')::float8 AS "vs baseline %"
FROM {kpi_current.TABLE}
WHERE kpi_id = '{kpi.id}' AND scope = 'city' AND period = '{period}'
"""


# A sensor is reporting while the default sensor-silent rule would not call it silent (its
# intervals and its floor, read from the rule so the map and the alerts agree); a gateway if it
# says it is online.
_SILENT_RULE = next(rule for rule in DEFAULT_RULES if rule.id == "sensor-silent")
_GRACE = (
    f"make_interval(secs => greatest({float(_SILENT_RULE.params['intervals'])} * s.interval_s, "
    f"{float(_SILENT_RULE.params['min_silence_s'])}))"
)
_NEWEST_CTE = """newest AS (
  SELECT sensor_key, max(last_time) AS last_time
  FROM readings_1m
  WHERE bucket > now() - interval '1 day'
  GROUP BY sensor_key
)"""

MAP_SQL = f"""
WITH {_NEWEST_CTE}
SELECT s.id AS name, s.kind, s.district_id AS district, s.latitude, s.longitude,
       CASE WHEN s.status <> 'active' THEN 3
            WHEN n.last_time > now() - {_GRACE} THEN 0
            WHEN n.last_time IS NOT NULL THEN 1
            ELSE 2 END AS state,
       n.last_time AS last_reading
FROM sensors s LEFT JOIN newest n ON n.sensor_key = s.key
WHERE s.latitude IS NOT NULL AND s.district_id IN ({DISTRICTS}) AND s.domain IN ({DOMAINS})
UNION ALL
SELECT g.id, 'gateway', g.district_id, avg(s.latitude), avg(s.longitude),
       CASE WHEN g.status = 'retired' THEN 3
            WHEN g.online THEN 0
            WHEN g.last_seen > now() - interval '15 minutes' THEN 1
            ELSE 2 END,
       g.last_seen
FROM gateways g JOIN sensors s ON s.gateway_id = g.id
WHERE s.latitude IS NOT NULL AND g.district_id IN ({DISTRICTS})
GROUP BY g.id
"""

OPEN_ALERTS_SQL = f"""
SELECT a.raised_at AS raised, a.severity, a.state, r.name AS rule, a.subject_id AS subject,
       a.district_id AS district, a.domain, a.message, a.value
FROM alerts a JOIN alert_rules r ON r.id = a.rule_id
WHERE a.state <> 'cleared'
  AND (a.district_id IS NULL OR a.district_id IN ({DISTRICTS}))
  AND (a.domain IS NULL OR a.domain IN ({DOMAINS}))
ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
         a.raised_at DESC
"""

COVERAGE_SQL = f"""
WITH {_NEWEST_CTE}
SELECT d.name AS district,
       avg(CASE WHEN n.last_time > now() - {_GRACE}
                THEN 1.0 ELSE 0.0 END)::float8 AS "sensors reporting"
FROM districts d
JOIN sensors s ON s.district_id = d.id AND s.status = 'active'
LEFT JOIN newest n ON n.sensor_key = s.key
WHERE d.id IN ({DISTRICTS}) AND s.domain IN ({DOMAINS})
GROUP BY d.id, d.name
ORDER BY d.id
"""


def build() -> db.Dashboard:
    board = (
        db.Dashboard("UrbanPulse: city overview")
        .uid("urbanpulse-city")
        .description("Every KPI against its target band, sensors and gateways, open alerts.")
        .tags(["urbanpulse", "city"])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
        .with_variable(period_variable())
        .with_variable(district_variable())
        .with_variable(domain_variable())
        .with_row(db.Row("KPIs of the city (colour: the catalog's target band)"))
    )
    for kpi in catalog.KPIS.values():
        board = board.with_panel(kpi_stat(kpi, kpi_sql(kpi)))
    return (
        board.with_row(db.Row("Sensors and gateways"))
        .with_panel(
            status_map(
                "Sensors and gateways by status",
                MAP_SQL,
                "state",
                steps((None, GREEN), (1, ORANGE), (2, RED), (3, "gray")),
                named(STATES),
            )
        )
        .with_panel(
            bars(
                "Coverage per district: sensors reporting",
                COVERAGE_SQL,
                "percentunit",
                steps((None, RED), (0.75, ORANGE), (0.9, GREEN)),
            )
        )
        .with_row(db.Row("Alerts"))
        .with_panel(table_panel("Open alerts", OPEN_ALERTS_SQL, span=24))
    )
