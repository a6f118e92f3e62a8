"""Operations: is the platform keeping up? Ingest rate, quarantine, acknowledgement lag, gateways,
rollup and KPI freshness, all from the database (no second datasource needed)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from services.storage import kpi_current

from .panels import (
    GREEN,
    ORANGE,
    RED,
    chart,
    district_variable,
    domain_variable,
    stat_panel,
    steps,
    table_panel,
)
from .sql import DISTRICTS, DOMAINS, by_span

# Readings stored per second, by domain: the rollups' counts over the bucket (at least the
# rollup's own width, or a coarse rollup would read as a burst).
INGEST_SQL = by_span(
    "SELECT $__timeGroupAlias(r.bucket, $__interval), s.domain AS metric, "
    "sum(r.count) * 1000.0 / greatest($__interval_ms, {width} * 1000) AS value "
    "FROM {rollup} r JOIN sensors s ON s.key = r.sensor_key "
    f"WHERE {{span}} AND $__timeFilter(r.bucket) AND s.domain IN ({DOMAINS}) "
    f"AND s.district_id IN ({DISTRICTS}) GROUP BY 1, 2"
)

QUARANTINE_SQL = """
SELECT $__timeGroupAlias(received_at, $__interval), reason AS metric, count(*)::float8 AS value
FROM quarantine
WHERE $__timeFilter(received_at)
GROUP BY 1, 2
ORDER BY 1
"""

QUARANTINE_TOTALS_SQL = """
SELECT reason, count(*) AS messages, count(*) FILTER (WHERE replayed_at IS NULL) AS waiting,
       max(received_at) AS latest
FROM quarantine
WHERE $__timeFilter(received_at)
GROUP BY reason
ORDER BY messages DESC
"""

ACK_LAG_SQL = f"""
SELECT percentile_cont(0.5) WITHIN GROUP (
         ORDER BY extract(epoch FROM acknowledged_at - raised_at))::float8 AS median,
       percentile_cont(0.9) WITHIN GROUP (
         ORDER BY extract(epoch FROM acknowledged_at - raised_at))::float8 AS p90
FROM alerts
WHERE acknowledged_at IS NOT NULL AND $__timeFilter(acknowledged_at)
  AND (domain IS NULL OR domain IN ({DOMAINS}))
"""

GATEWAYS_ONLINE_SQL = f"""
SELECT count(*) FILTER (WHERE online)::float8 / nullif(count(*), 0) AS online
FROM gateways
WHERE status = 'active' AND district_id IN ({DISTRICTS})
"""

GATEWAYS_SQL = f"""
SELECT id AS gateway, district_id AS district, online, last_seen,
       extract(epoch FROM now() - last_seen)::float8 AS "silent for, s"
FROM gateways
WHERE status = 'active' AND district_id IN ({DISTRICTS})
ORDER BY online, last_seen NULLS FIRST
"""

# Each rollup's newest reading folded in; the KPI values' age is the monitor's heartbeat.
FRESHNESS_SQL = f"""
SELECT 'readings_1m' AS relation, max(last_time) AS newest,
       extract(epoch FROM now() - max(last_time))::float8 AS "age, s"
FROM readings_1m WHERE bucket > now() - interval '1 day'
UNION ALL
SELECT 'readings_1h', max(last_time), extract(epoch FROM now() - max(last_time))::float8
FROM readings_1h WHERE bucket > now() - interval '2 days'
UNION ALL
SELECT 'readings_1d', max(last_time), extract(epoch FROM now() - max(last_time))::float8
FROM readings_1d WHERE bucket > now() - interval '3 days'
UNION ALL
SELECT '{kpi_current.TABLE}', max(computed_at), extract(epoch FROM now() - max(computed_at))::float8
FROM {kpi_current.TABLE}
"""

KPI_AGE_SQL = f"""
SELECT extract(epoch FROM now() - max(computed_at))::float8 AS "KPI values age"
FROM {kpi_current.TABLE}
"""


def build() -> db.Dashboard:
    return (
        db.Dashboard("UrbanPulse: operations")
        .uid("urbanpulse-operations")
        .description("Ingest rate, quarantine, acknowledgement lag, gateways, freshness.")
        .tags(["urbanpulse", "operations"])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
        .with_variable(district_variable())
        .with_variable(domain_variable())
        .with_panel(
            stat_panel(
                "Gateways online",
                GATEWAYS_ONLINE_SQL,
                "percentunit",
                steps((None, RED), (0.9, ORANGE), (1.0, GREEN)),
            )
        )
        .with_panel(
            stat_panel(
                "Acknowledgement lag (median, 90th percentile)",
                ACK_LAG_SQL,
                "s",
                steps((None, GREEN), (900, ORANGE), (3600, RED)),
            )
        )
        .with_panel(
            stat_panel(
                "KPI values age (the monitor runs every minute)",
                KPI_AGE_SQL,
                "s",
                steps((None, GREEN), (180, ORANGE), (600, RED)),
            )
        )
        .with_panel(chart("Readings stored per second", INGEST_SQL, "reqps"))
        .with_panel(chart("Quarantined messages by reason", QUARANTINE_SQL, "none", bars=True))
        .with_panel(table_panel("Quarantine by reason", QUARANTINE_TOTALS_SQL))
        .with_panel(table_panel("Rollup and KPI freshness", FRESHNESS_SQL))
        .with_panel(table_panel("Gateways", GATEWAYS_SQL, span=24))
    )
