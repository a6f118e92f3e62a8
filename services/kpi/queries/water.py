"""KPI computations of the water domain (see ../catalog.py): WAT-1 non-revenue water, WAT-2
drinking-water compliance.

WAT-1 balances each district metered area (DMA, ``sensors.dma``): the system input volume is the
DMA inflow meters' mean flow times their active time; customer consumption is each customer
meter's index at the end minus its index at the start of the bucket, each interpolated at the
boundary from the readings that bracket it (``_registers.py``), counted only for meters with both
indexes and grossed up to all the DMA's meters. A DMA balances only when at least 98 % of its
customer meters have both indexes (``KPIS.md``) and its inflow meter delivered at least 75 % of
its readings; the meters of a DMA that does not balance do not count as used. Coverage is the
share of customer meters used (98 % needed for a rating). In a bucket still running, the index
"at the end" is the index now, carried on from a meter's last reading at its latest rate, so
that consumption and the inflow cover the same time.

WAT-2 judges reading sets: the pH, turbidity and free chlorine a quality station reported in the
same minute (``readings_1m``: each minute's min and max must be inside the WHO limits). A set
missing one of the three is not a valid set; completeness is valid sets over the sets the station
owed at its reporting interval.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES

from ..catalog import KPIS
from ..model import Computation, KpiQuery, KpiRow
from ._registers import REGISTER_INDEXES, REGISTER_SPAN, TOLERANCE_INTERVALS
from ._sql import (
    ACTIVE_SECONDS,
    BUCKETS_CTE,
    EXPECTED_READINGS,
    SENSOR_EXPECTED,
    WANTED_GROUP,
    cut_minutes,
    fetch_rows,
    params,
    tiled,
)

# The inflow meter's share of its expected readings below which SIV is not integrated (the data
# capture threshold the other KPIs use).
INFLOW_COMPLETENESS_NEEDED = 0.75


def _non_revenue_water(cut: str | None) -> str:
    """WAT-1's statement (``cut``: the minutes its bounds cut, ``_sql.cut_minutes``)."""
    tiles = tiled("w.key", "w.bucket_start", "w.bucket_end", "%(flow)s", cut_minutes=cut)
    return f"""
WITH {BUCKETS_CTE},
water_sensors AS (
    SELECT b.bucket_start, b.bucket_end, b.observed_end, s.key, s.kind, s.district_id, s.dma,
           s.interval_s, {EXPECTED_READINGS} AS expected_readings, {ACTIVE_SECONDS} AS active_s,
           {REGISTER_SPAN}
    FROM buckets b
    JOIN sensors s ON s.kind IN ('water_inflow', 'water_meter') AND s.dma IS NOT NULL
     AND {SENSOR_EXPECTED}
),
register_spans AS (
    SELECT bucket_start, key, %(index)s::smallint AS quantity_key, interval_s,
           span_start, span_end, start_bracketed, end_bracketed, end_running
    FROM water_sensors WHERE kind = 'water_meter'
),
{REGISTER_INDEXES},
inflow_reads AS (
    SELECT w.bucket_start, w.key, sum(r.count) AS n, sum(r.sum) AS total
    FROM water_sensors w
    CROSS JOIN LATERAL {tiles} r
    WHERE w.kind = 'water_inflow'
    GROUP BY 1, 2
),
per_sensor AS (
    SELECT w.bucket_start, w.district_id, w.dma, w.kind, w.expected_readings,
           coalesce(rd.n, 0) AS n,
           -- inflow: mean flow (m3/s) x seconds in service = m3
           CASE WHEN rd.n > 0 THEN rd.total / rd.n * w.active_s END AS inflow_m3,
           -- customer meter: index at the end - index at the start, both read
           coalesce(ri.index_start IS NOT NULL AND ri.index_end IS NOT NULL, false)
               AS both_indexes,
           ri.index_end - ri.index_start AS consumed_m3
    FROM water_sensors w
    LEFT JOIN inflow_reads rd ON rd.bucket_start = w.bucket_start AND rd.key = w.key
    LEFT JOIN register_indexes ri ON ri.bucket_start = w.bucket_start AND ri.key = w.key
),
per_dma AS (
    SELECT bucket_start, district_id, dma,
           sum(inflow_m3) AS siv,
           sum(least(n, expected_readings)) FILTER (WHERE kind = 'water_inflow')
               / nullif(sum(expected_readings) FILTER (WHERE kind = 'water_inflow'), 0)
               AS inflow_completeness,
           count(*) FILTER (WHERE kind = 'water_meter') AS meters,
           count(*) FILTER (WHERE both_indexes) AS meters_read,
           sum(consumed_m3) FILTER (WHERE both_indexes) AS consumed_read
    FROM per_sensor
    GROUP BY bucket_start, district_id, dma
),
judged AS (
    -- KPIS.md: a DMA balances only with >= 98 percent of its customer meters read at both ends, and
    -- its inflow integrates only when the inflow meter delivered enough of the period.
    SELECT *, (siv IS NOT NULL AND meters > 0
               AND meters_read >= %(meters_needed)s * meters
               AND coalesce(inflow_completeness, 0) >= %(inflow_needed)s) AS balances
    FROM per_dma
),
balanced AS (
    SELECT bucket_start, district_id, dma, meters, inflow_completeness,
           CASE WHEN balances THEN siv END AS siv,
           CASE WHEN balances THEN meters_read ELSE 0 END AS meters_used,
           -- meters (under 2 percent) without both indexes: estimated at the read meters mean
           CASE WHEN balances THEN consumed_read * meters / meters_read END AS consumed
    FROM judged
),
totals AS (
    SELECT bucket_start, district_id,
           sum(siv) AS siv, sum(consumed) AS consumed,
           sum(meters_used)::int AS sources_used, sum(meters)::int AS sources_expected,
           min(inflow_completeness) AS inflow_completeness,
           count(siv)::int AS dmas_balanced, count(*)::int AS dmas
    FROM balanced
    GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
    HAVING {WANTED_GROUP}
)
SELECT bucket_start, district_id,
       100.0 * (siv - consumed) / nullif(siv, 0) AS value,
       sources_used, sources_expected, NULL::float8 AS completeness,
       jsonb_build_object('siv_m3', siv, 'consumption_m3', consumed,
                          'inflow_completeness', inflow_completeness,
                          'dmas_balanced', dmas_balanced, 'dmas', dmas) AS detail
FROM totals
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def non_revenue_water(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """WAT-1: 100 (SIV - C) / SIV over the balanced DMAs of each scope, in %."""
    return fetch_rows(
        conn,
        _non_revenue_water(cut_minutes(query)),
        params(
            query,
            flow=QUANTITIES["flow"].key,
            index=QUANTITIES["index"].key,
            meters_needed=KPIS["WAT-1"].coverage_threshold,
            inflow_needed=INFLOW_COMPLETENESS_NEEDED,
            register_tolerance=TOLERANCE_INTERVALS,
        ),
    )


# WHO guideline limits; the minute's min and max of each quantity must lie inside them.
_COMPLIANCE = f"""
WITH {BUCKETS_CTE},
stations AS (
    SELECT b.bucket_start, b.bucket_end, s.key, s.district_id,
           {EXPECTED_READINGS} AS expected_sets
    FROM buckets b JOIN sensors s ON s.kind = 'water_quality' AND {SENSOR_EXPECTED}
),
reading_sets AS (
    SELECT st.bucket_start, st.key, m.bucket AS minute,
           bool_and(CASE m.quantity_key
                        WHEN %(ph)s THEN m.min >= 6.5 AND m.max <= 8.5
                        WHEN %(turbidity)s THEN m.max <= 1.0
                        ELSE m.min >= 0.2 AND m.max <= 5.0 END) AS compliant
    FROM stations st JOIN readings_1m m
      ON m.sensor_key = st.key AND m.quantity_key IN (%(ph)s, %(turbidity)s, %(chlorine)s)
     AND m.bucket >= st.bucket_start AND m.bucket < st.bucket_end
    GROUP BY st.bucket_start, st.key, m.bucket
    HAVING count(DISTINCT m.quantity_key) = 3
),
per_station AS (
    SELECT st.bucket_start, st.district_id, st.expected_sets,
           count(rs.minute) AS sets, count(rs.minute) FILTER (WHERE rs.compliant) AS compliant
    FROM stations st
    LEFT JOIN reading_sets rs ON rs.bucket_start = st.bucket_start AND rs.key = st.key
    GROUP BY st.bucket_start, st.key, st.district_id, st.expected_sets
)
SELECT bucket_start, district_id,
       100.0 * sum(compliant) / nullif(sum(sets), 0) AS value,
       count(*) FILTER (WHERE sets > 0) AS sources_used, count(*) AS sources_expected,
       sum(least(sets, expected_sets)) / nullif(sum(expected_sets), 0) AS completeness,
       jsonb_build_object('reading_sets', sum(sets), 'compliant_sets', sum(compliant))
           AS detail
FROM per_station
GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
HAVING {WANTED_GROUP}
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def drinking_water_compliance(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """WAT-2: % of complete quality reading sets inside the WHO limits."""
    return fetch_rows(
        conn,
        _COMPLIANCE,
        params(
            query,
            ph=QUANTITIES["ph"].key,
            turbidity=QUANTITIES["turbidity"].key,
            chlorine=QUANTITIES["chlorine"].key,
        ),
    )


COMPUTATIONS: Mapping[str, Computation] = {
    "WAT-1": non_revenue_water,
    "WAT-2": drinking_water_compliance,
}
