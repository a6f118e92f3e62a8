"""One dashboard per domain, with what that service's operator watches."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from services.kpi.catalog import KPIS
from services.storage.city_settings import setting

from .city import kpi_sql
from .panels import (
    GREEN,
    ORANGE,
    RED,
    chart,
    district_variable,
    kpi_stat,
    sensor_variable,
    status_map,
    steps,
    table_panel,
)
from .sql import DISTRICTS, by_span, quantity

# The mean of a quantity per bucket and per series (``{series}``), over the chosen rollup.
_MEAN = (
    "SELECT $__timeGroupAlias(r.bucket, $__interval), {series} AS metric,\n"
    "       sum(r.sum) / sum(r.count){scale} AS value\n"
    "FROM {{rollup}} r JOIN sensors s ON s.key = r.sensor_key\n"
    "WHERE {{span}}\n"
    "  AND $__timeFilter(r.bucket) AND s.kind = '{kind}' AND {quantity}\n"
    "  AND s.district_id IN ({districts}){extra}\n"
    "GROUP BY 1, 2"
)


def mean_sql(kind: str, qty: str, series: str, scale: str = "", extra: str = "") -> str:
    """Mean of ``qty`` per bucket and ``series``; ``scale`` is an SQL suffix (`` * 1000``)."""
    return by_span(
        _MEAN.format(
            series=series,
            scale=scale,
            kind=kind,
            quantity=quantity(qty),
            districts=DISTRICTS,
            extra=extra,
        )
    )


def _board(domain: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(f"UrbanPulse: {title}")
        .uid(f"urbanpulse-{domain}")
        .description(description)
        .tags(["urbanpulse", domain])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
        .with_variable(district_variable())
    )


# --- water -------------------------------------------------------------------------------

# Minimum night flow (02:00-04:00 local, the leak rule's window) per DMA and night, from the
# hourly rollup: the IWA indicator a leak raises first.
NIGHT_MINIMUM_SQL = f"""
SELECT date_trunc('day', r.bucket + make_interval(secs => coalesce(
         (d.reference->>'utc_offset_s')::float8, 0))) AS "time",
       s.dma AS metric,
       min(r.min) * 1000 AS value
FROM readings_1h r
JOIN sensors s ON s.key = r.sensor_key
JOIN districts d ON d.id = s.district_id
WHERE $__timeFilter(r.bucket) AND s.kind = 'water_inflow' AND {quantity("flow")}
  AND s.district_id IN ({DISTRICTS})
  AND extract(hour FROM r.bucket + make_interval(secs => coalesce(
        (d.reference->>'utc_offset_s')::float8, 0))) IN (2, 3)
GROUP BY 1, 2
ORDER BY 1
"""

LEAK_ALERTS_SQL = f"""
SELECT a.raised_at AS raised, a.state, a.subject_id AS sensor, s.dma, a.district_id AS district,
       a.value AS "night flow / median", a.message, a.acknowledged_by, a.ack_comment
FROM alerts a LEFT JOIN sensors s ON s.id = a.subject_id
WHERE a.rule_id IN ('water-leak-night-flow', 'water-low-pressure')
  AND (a.state <> 'cleared' OR $__timeFilter(a.raised_at))
  AND a.district_id IN ({DISTRICTS})
ORDER BY a.raised_at DESC
"""


def water() -> db.Dashboard:
    return (
        _board("water", "water", "DMA inflow and night minimum, leaks, pressure, quality.")
        .with_panel(kpi_stat(KPIS["WAT-1"], kpi_sql(KPIS["WAT-1"], "month")))
        .with_panel(kpi_stat(KPIS["WAT-2"], kpi_sql(KPIS["WAT-2"], "day")))
        .with_panel(
            chart(
                "DMA inflow",
                mean_sql("water_inflow", "flow", "s.dma", " * 1000"),
                "litre/sec",
                description="Mean inflow per district metered area.",
            )
        )
        .with_panel(
            chart(
                "Minimum night flow per DMA (02:00-04:00 local)",
                NIGHT_MINIMUM_SQL,
                "litre/sec",
                description=(
                    "The lowest inflow of each night. A step up that stays is a leak: the "
                    "leak rule fires at 1.3 times the median of the previous 7 nights."
                ),
                bars=True,
                time_from="14d",
            )
        )
        .with_panel(table_panel("Leak and pressure alerts", LEAK_ALERTS_SQL, span=24))
        .with_panel(
            chart(
                "Network pressure",
                mean_sql("water_pressure", "pressure", "s.dma", " / 100000"),
                "pressurebar",
                thresholds=steps((None, RED), (2.0, GREEN)),
            )
        )
        .with_panel(
            chart(
                "Free chlorine",
                mean_sql("water_quality", "chlorine", "s.id"),
                "none",
                description="mg/l; WHO: 0.2 residual, 5 maximum.",
                thresholds=steps((None, RED), (0.2, GREEN), (5.0, RED)),
            )
        )
    )


# --- energy ------------------------------------------------------------------------------

# Minutes with a feeder's voltage at zero (<= 1 V, the outage rule), joined into outages
# (gaps and islands); 5 minutes or more is sustained (IEEE 1366), counted by SAIFI/SAIDI. The
# minutes are read only inside the hours whose lowest voltage was zero, so a year costs the
# year's hourly rows plus the outages' minutes, not every minute of every feeder.
OUTAGES_SQL = f"""
WITH outage_hours AS (
  SELECT s.key, s.feeder, s.district_id, s.customers_served, h.quantity_key, h.bucket AS hour
  FROM readings_1h h JOIN sensors s ON s.key = h.sensor_key
  WHERE h.bucket >= date_trunc('hour', $__timeFrom()::timestamptz)
    AND h.bucket < $__timeTo()::timestamptz
    AND s.kind = 'feeder_meter' AND {quantity("voltage", "h")} AND h.min <= 1
    AND s.district_id IN ({DISTRICTS})
),
down AS (
  SELECT o.feeder, o.district_id, o.customers_served, r.bucket,
         r.bucket - row_number() OVER (PARTITION BY o.feeder ORDER BY r.bucket)
                    * interval '1 minute' AS island
  FROM outage_hours o JOIN readings_1m r
    ON r.sensor_key = o.key AND r.quantity_key = o.quantity_key
   AND r.bucket >= o.hour AND r.bucket < o.hour + interval '1 hour'
  WHERE $__timeFilter(r.bucket) AND r.min <= 1
)
SELECT feeder, district_id AS district, min(bucket) AS start,
       max(bucket) + interval '1 minute' AS "end", count(*)::float8 AS minutes,
       max(customers_served) AS customers,
       CASE WHEN count(*) >= 5 THEN 'sustained' ELSE 'momentary' END AS interruption
FROM down
GROUP BY feeder, district_id, island
ORDER BY start DESC
"""

# Each inverter's mean power over the interval, summed over the district's inverters: summing
# rollup rows' means directly counts an inverter once per row it has in the interval.
SOLAR_SQL = by_span(
    'SELECT "time", metric, sum(value) AS value FROM ('
    "SELECT $__timeGroupAlias(r.bucket, $__interval), s.district_id AS metric, "
    "sum(r.sum) / sum(r.count) AS value FROM {rollup} r "
    "JOIN sensors s ON s.key = r.sensor_key "
    f"WHERE {{span}} AND $__timeFilter(r.bucket) AND s.kind = 'solar_inverter' "
    f"AND {quantity('power')} AND s.district_id IN ({DISTRICTS}) GROUP BY 1, 2, s.key"
    ") per_inverter GROUP BY 1, 2"
)


def energy() -> db.Dashboard:
    return (
        _board("energy", "energy", "Feeder outages, SAIFI and SAIDI to date, load, solar.")
        .with_panel(kpi_stat(KPIS["ENE-1"], kpi_sql(KPIS["ENE-1"], "year")).title("SAIFI to date"))
        .with_panel(kpi_stat(KPIS["ENE-2"], kpi_sql(KPIS["ENE-2"], "year")).title("SAIDI to date"))
        .with_panel(kpi_stat(KPIS["ENE-3"], kpi_sql(KPIS["ENE-3"], "month")))
        .with_panel(kpi_stat(KPIS["ICT-1"], kpi_sql(KPIS["ICT-1"], "day")))
        .with_panel(
            table_panel(
                "Feeder outages",
                OUTAGES_SQL,
                description="Voltage at zero, minute by minute; 5 minutes or more is sustained.",
                span=24,
            )
        )
        .with_panel(
            chart(
                "Feeder voltage (lowest in each interval)",
                by_span(
                    "SELECT $__timeGroupAlias(r.bucket, $__interval), s.feeder AS metric, "
                    "min(r.min) AS value FROM {rollup} r JOIN sensors s ON s.key = r.sensor_key "
                    f"WHERE {{span}} AND $__timeFilter(r.bucket) AND s.kind = 'feeder_meter' "
                    f"AND {quantity('voltage')} AND s.district_id IN ({DISTRICTS}) GROUP BY 1, 2"
                ),
                "volt",
                thresholds=steps((None, RED), (180.0, GREEN)),
            )
        )
        .with_panel(chart("Feeder load", mean_sql("feeder_meter", "power", "s.feeder"), "watt"))
        .with_panel(
            chart(
                "Solar generation per district",
                SOLAR_SQL,
                "watt",
                description="Sum over inverters of each one's mean power in the interval.",
            )
        )
    )


# --- waste -------------------------------------------------------------------------------

_LATEST_FILL = f"""
WITH latest AS (
  SELECT DISTINCT ON (r.sensor_key) r.sensor_key, r.last AS fill, r.last_time
  FROM readings_1h r
  WHERE r.bucket > now() - interval '1 day' AND {quantity("fill")}
  ORDER BY r.sensor_key, r.bucket DESC
)
SELECT s.id AS container, s.district_id AS district, s.latitude, s.longitude,
       l.fill, l.last_time AS measured, (s.metadata->>'volume_l')::float8 AS "volume, l"
FROM latest l JOIN sensors s ON s.key = l.sensor_key
WHERE s.kind = 'waste_container' AND s.district_id IN ({DISTRICTS})
"""
FILL_STEPS = ((None, GREEN), (0.9, ORANGE), (1.0, RED))

# Overflowing as WST-1 counts it: the district's overflow threshold, else the city's, else the
# setting's default (services/storage/city_settings.py).
_OVERFLOW_AT = (
    "coalesce((d.reference ->> 'overflow_threshold')::float8, "
    "(SELECT (value #>> '{}')::float8 FROM city_settings WHERE name = 'overflow_threshold'), "
    f"{float(setting('overflow_threshold').default)})"
)

OVERFLOW_DAYS_SQL = f"""
SELECT r.bucket AS "time", s.district_id AS metric,
       (count(*) FILTER (WHERE r.max >= {_OVERFLOW_AT}))::float8 AS value
FROM readings_1d r JOIN sensors s ON s.key = r.sensor_key JOIN districts d ON d.id = s.district_id
WHERE $__timeFilter(r.bucket) AND s.kind = 'waste_container' AND {quantity("fill")}
  AND s.district_id IN ({DISTRICTS})
GROUP BY 1, 2
ORDER BY 1
"""


def waste() -> db.Dashboard:
    return (
        _board("waste", "waste", "Container fill, the overflow map, overflow days.")
        .with_panel(kpi_stat(KPIS["WST-1"], kpi_sql(KPIS["WST-1"], "month")))
        .with_panel(
            status_map(
                "Container fill and overflow",
                _LATEST_FILL,
                "fill",
                steps(*FILL_STEPS),
            ).unit("percentunit")
        )
        .with_panel(
            table_panel(
                "Fullest containers", _LATEST_FILL + "ORDER BY l.fill DESC LIMIT 20", span=12
            ).unit("percentunit")
        )
        .with_panel(
            chart(
                "Mean container fill per district",
                mean_sql("waste_container", "fill", "s.district_id"),
                "percentunit",
                thresholds=steps(*FILL_STEPS),
            )
        )
        .with_panel(
            chart(
                "Overflowing containers per day (fill reached the overflow threshold)",
                OVERFLOW_DAYS_SQL,
                "none",
                bars=True,
                time_from="30d",
            )
        )
    )


# --- traffic -----------------------------------------------------------------------------

_SEGMENTS = "s.id IN (${segment:sqlstring})"

SLOWEST_SQL = f"""
SELECT s.id AS segment, s.district_id AS district, s.road_class,
       sum(r.sum) / sum(r.count) * 3.6 AS "speed, km/h",
       s.free_flow_speed * 3.6 AS "free-flow, km/h",
       sum(r.sum) / sum(r.count) / s.free_flow_speed AS "speed / free-flow"
FROM readings_1m r JOIN sensors s ON s.key = r.sensor_key
WHERE r.bucket > $__timeTo()::timestamptz - interval '15 minutes' AND r.bucket <= $__timeTo()
  AND s.kind = 'traffic_counter'
  AND {quantity("speed")} AND s.district_id IN ({DISTRICTS}) AND s.free_flow_speed > 0
GROUP BY s.id, s.district_id, s.road_class, s.free_flow_speed
ORDER BY 6
LIMIT 15
"""


def traffic() -> db.Dashboard:
    return (
        _board("traffic", "traffic", "Segment speed against free-flow, congestion, volumes.")
        .with_variable(sensor_variable("segment", "Segment", "traffic_counter"))
        .with_panel(kpi_stat(KPIS["TRA-1"], kpi_sql(KPIS["TRA-1"], "day")))
        .with_panel(kpi_stat(KPIS["TRA-2"], kpi_sql(KPIS["TRA-2"], "day")))
        .with_panel(
            chart(
                "Speed against free-flow",
                mean_sql(
                    "traffic_counter",
                    "speed",
                    "s.id",
                    " / min(s.free_flow_speed)",
                    extra=f" AND {_SEGMENTS} AND s.free_flow_speed > 0",
                ),
                "percentunit",
                description="Mean speed over the segment's free-flow speed; the congestion "
                "rule fires below 40 % for 10 minutes.",
                thresholds=steps((None, RED), (0.4, ORANGE), (0.5, GREEN)),
            )
        )
        .with_panel(
            chart(
                "Segment speed",
                mean_sql("traffic_counter", "speed", "s.id", " * 3.6", extra=f" AND {_SEGMENTS}"),
                "velocitykmh",
            )
        )
        .with_panel(table_panel("Slowest segments (last 15 minutes of the range)", SLOWEST_SQL))
        .with_panel(
            chart(
                "Vehicles per hour per district",
                by_span(
                    "SELECT $__timeGroupAlias(r.bucket, $__interval), s.district_id AS metric, "
                    "sum(r.sum) * 3600000.0 / greatest($__interval_ms, {width} * 1000) AS value "
                    "FROM {rollup} r JOIN sensors s ON s.key = r.sensor_key "
                    f"WHERE {{span}} AND $__timeFilter(r.bucket) AND s.kind = 'traffic_counter' "
                    f"AND {quantity('count')} AND s.district_id IN ({DISTRICTS}) GROUP BY 1, 2"
                ),
                "none",
            )
        )
    )


# --- environment -------------------------------------------------------------------------

_STATIONS = "s.id IN (${station:sqlstring})"

DAILY_MEANS_SQL = f"""
SELECT s.id AS station, s.district_id AS district,
       sum(r.sum) FILTER (WHERE q.name = 'pm25') / sum(r.count) FILTER (WHERE q.name = 'pm25')
         AS "PM2.5 24 h",
       sum(r.sum) FILTER (WHERE q.name = 'pm10') / sum(r.count) FILTER (WHERE q.name = 'pm10')
         AS "PM10 24 h",
       sum(r.sum) FILTER (WHERE q.name = 'no2') / sum(r.count) FILTER (WHERE q.name = 'no2')
         AS "NO2 24 h"
FROM readings_1h r
JOIN sensors s ON s.key = r.sensor_key
JOIN quantities q ON q.key = r.quantity_key
WHERE r.bucket >= now() - interval '24 hours' AND s.kind = 'air_quality'
  AND q.name IN ('pm25', 'pm10', 'no2') AND s.district_id IN ({DISTRICTS})
GROUP BY s.id, s.district_id
ORDER BY s.id
"""


def environment() -> db.Dashboard:
    board = _board(
        "environment", "environment", "PM2.5, PM10 and NO2 against the WHO lines; noise."
    ).with_variable(sensor_variable("station", "Air station", "air_quality"))
    for kpi_id, qty, label in (
        ("AIR-1", "pm25", "PM2.5"),
        ("AIR-2", "pm10", "PM10"),
        ("AIR-3", "no2", "NO2"),
    ):
        kpi = KPIS[kpi_id]
        board = board.with_panel(
            chart(
                f"{label} against the WHO 24-hour guideline ({kpi.band.target:g} ug/m3)",
                mean_sql("air_quality", qty, "s.id", extra=f" AND {_STATIONS}"),
                "conμgm3",
                description=(
                    f"Interval means per station; the dashed lines are the WHO 2021 24-hour "
                    f"guideline ({kpi.band.target:g}) and our warning limit "
                    f"({kpi.band.warning:g}). The KPI {kpi_id} rates daily means."
                ),
                thresholds=steps((None, GREEN), (kpi.band.target, ORANGE), (kpi.band.warning, RED)),
            )
        )
    return (
        board.with_panel(table_panel("24-hour means per station", DAILY_MEANS_SQL).unit("conμgm3"))
        .with_panel(
            chart(
                "Road noise (mean LAeq)",
                mean_sql("noise", "laeq", "s.id"),
                "dB",
                thresholds=steps((None, GREEN), (53.0, ORANGE), (55.0, RED)),
            )
        )
        .with_panel(kpi_stat(KPIS["NOI-1"], kpi_sql(KPIS["NOI-1"], "day")))
    )


DOMAIN_BOARDS = (water, energy, waste, traffic, environment)
