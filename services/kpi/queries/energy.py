"""KPI computations of the energy domain (see ../catalog.py): ENE-1 SAIFI, ENE-2 SAIDI (with
CAIDI), ENE-3 renewable share.

Interruptions (IEEE 1366) come from feeder meters' 1-minute rollups: a minute is "out" when the
feeder's voltage is zero in it, or, in a minute without a voltage reading, its power is exactly
zero (``KPIS.md``: a meter's zero power is no proof of an outage, a feeder's is). Consecutive out
minutes of a feeder, no further apart than its reporting interval, form one interruption lasting
from its first out reading to its last plus one interval; it is sustained when that reaches
``CitySettings.sustained_outage_s`` (5 min), momentary otherwise. An interruption belongs to the
bucket it began in, and is clipped to the period asked for. Customers per feeder come from the
registry (``sensors.customers_served`` of the feeder meter).

Customers served count only the feeders that can be judged: a feeder meter without a single
power or voltage reading in the bucket says nothing about its interruptions, so its customers
leave both the numerator and the denominator (rather than diluting SAIFI and SAIDI as customers
never interrupted); they are reported in the detail (``customers_not_judged``) and the feeder in
the coverage (sources used / expected).

Energies come from cumulative registers: a register's energy in a bucket is its index at the end
minus its index at the start, each interpolated at the boundary from the readings that bracket it
(``_registers.py``); a register without both indexes is unread and adds no energy.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES

from ..model import Computation, KpiQuery, KpiRow
from ._registers import REGISTER_INDEXES, REGISTER_SPAN, TOLERANCE_INTERVALS
from ._sql import (
    BUCKETS_CTE,
    EXPECTED_READINGS,
    SENSOR_EXPECTED,
    WANTED_GROUP,
    cut_minutes,
    fetch_rows,
    params,
    tiled,
)

_FEEDER_QUANTITIES = "ANY(ARRAY[%(power)s, %(voltage)s])"


def _interruptions_sql(value: str, cut: str | None) -> str:
    """ENE-1 and ENE-2's statement, ``value`` their column of ``indices`` (``cut``: the minutes
    its bounds cut, ``_sql.cut_minutes``)."""
    period_tiles = tiled(
        "f.key",
        "%(period_start)s::timestamptz",
        "%(period_end)s::timestamptz",
        _FEEDER_QUANTITIES,
        cut_minutes=cut,
    )
    bucket_tiles = tiled(
        "f.key", "f.bucket_start", "f.bucket_end", _FEEDER_QUANTITIES, cut_minutes=cut
    )
    return f"""
WITH {BUCKETS_CTE},
feeders AS (
    -- feeder meters in service at some time of the period: the ones whose minutes we scan
    SELECT DISTINCT s.key, s.interval_s
    FROM buckets b JOIN sensors s ON s.kind = 'feeder_meter' AND {SENSOR_EXPECTED}
),
zero_spans AS (
    -- coarse buckets in which a feeder saw a zero, so that a year's value reads the minutes of
    -- the days with an outage, not all 525,600 of them
    SELECT DISTINCT f.key, f.interval_s, r.first_time, r.last_time
    FROM feeders f
    CROSS JOIN LATERAL {period_tiles} r
    WHERE r.min <= 0
),
candidates AS (
    -- minutes in which a feeder saw a zero: the only ones that can be out
    SELECT DISTINCT z.key, z.interval_s, m.bucket AS minute
    FROM zero_spans z JOIN readings_1m m
      ON m.sensor_key = z.key AND m.quantity_key IN (%(power)s, %(voltage)s)
     AND m.bucket >= date_bin('1 minute', z.first_time, '1970-01-01Z') AND m.bucket <= z.last_time
     AND m.bucket >= %(period_start)s AND m.bucket < %(period_end)s AND m.min <= 0
),
out_minutes AS (
    SELECT c.key, c.interval_s, c.minute
    FROM candidates c JOIN readings_1m m
      ON m.sensor_key = c.key AND m.bucket = c.minute AND m.quantity_key IN (%(power)s, %(voltage)s)
    GROUP BY c.key, c.interval_s, c.minute
    HAVING CASE WHEN bool_or(m.quantity_key = %(voltage)s)
                THEN bool_and(m.quantity_key <> %(voltage)s OR m.max = 0)
                ELSE bool_and(m.max = 0 AND m.min = 0) END
),
starts AS (
    SELECT key, interval_s, minute,
           CASE WHEN minute - lag(minute) OVER (PARTITION BY key ORDER BY minute)
                     <= make_interval(secs => greatest(interval_s, 60))
                THEN 0 ELSE 1 END AS begins
    FROM out_minutes
),
islands AS (
    SELECT key, interval_s, minute,
           sum(begins) OVER (PARTITION BY key ORDER BY minute) AS island
    FROM starts
),
interruptions AS (
    SELECT key, min(minute) AS began,
           extract(epoch FROM least(max(minute) + make_interval(secs => interval_s),
                                    %(period_end)s::timestamptz) - min(minute))::float8 AS seconds
    FROM islands GROUP BY key, interval_s, island
),
served AS (
    SELECT b.bucket_start, b.bucket_end, s.key, s.district_id,
           coalesce(s.customers_served, 0) AS customers, {EXPECTED_READINGS} AS expected_readings
    FROM buckets b JOIN sensors s ON s.kind = 'feeder_meter' AND {SENSOR_EXPECTED}
),
received AS (
    SELECT f.bucket_start, f.key, r.quantity_key, sum(r.count) AS n
    FROM served f
    CROSS JOIN LATERAL {bucket_tiles} r
    GROUP BY 1, 2, 3
),
per_feeder AS (
    SELECT f.bucket_start, f.district_id, f.customers, f.expected_readings,
           coalesce((SELECT max(rc.n) FROM received rc
                     WHERE rc.bucket_start = f.bucket_start AND rc.key = f.key), 0) AS n,
           count(i.began) FILTER (WHERE i.seconds >= %(sustained_s)s) AS sustained,
           coalesce(sum(i.seconds) FILTER (WHERE i.seconds >= %(sustained_s)s), 0) AS seconds,
           count(i.began) FILTER (WHERE i.seconds < %(sustained_s)s) AS momentary
    FROM served f LEFT JOIN interruptions i
      ON i.key = f.key AND i.began >= f.bucket_start AND i.began < f.bucket_end
    GROUP BY f.bucket_start, f.bucket_end, f.key, f.district_id, f.customers,
             f.expected_readings
),
indices AS (
    -- a feeder judged is one that reported power or voltage in the bucket: only its customers
    -- are served customers (numerator and denominator alike)
    SELECT bucket_start, district_id,
           sum(customers) FILTER (WHERE n > 0)::float8 AS customers_served,
           coalesce(sum(customers) FILTER (WHERE n = 0), 0)::float8 AS customers_not_judged,
           sum(customers * sustained) FILTER (WHERE n > 0)::float8 AS customer_interruptions,
           sum(customers * seconds / 60.0) FILTER (WHERE n > 0)::float8 AS customer_minutes,
           sum(momentary)::int AS momentary_interruptions,
           sum(sustained)::int AS sustained_interruptions,
           count(*) FILTER (WHERE n > 0) AS sources_used, count(*) AS sources_expected,
           sum(least(n, expected_readings)) / nullif(sum(expected_readings), 0) AS completeness
    FROM per_feeder
    GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
    HAVING {WANTED_GROUP}
)
SELECT bucket_start, district_id,
       {value} AS value,
       sources_used, sources_expected, completeness,
       jsonb_build_object(
           'customers_served', customers_served,
           'customers_not_judged', customers_not_judged,
           'customer_interruptions', customer_interruptions,
           'customer_minutes', customer_minutes,
           'sustained_interruptions', sustained_interruptions,
           'momentary_interruptions', momentary_interruptions,
           'saifi', customer_interruptions / nullif(customers_served, 0),
           'saidi', customer_minutes / nullif(customers_served, 0),
           'caidi', customer_minutes / nullif(customer_interruptions, 0)
       ) AS detail
FROM indices
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


_SAIFI = "customer_interruptions / nullif(customers_served, 0)"
_SAIDI = "customer_minutes / nullif(customers_served, 0)"


def _interruptions(conn: psycopg.Connection[TupleRow], query: KpiQuery, value: str) -> list[KpiRow]:
    return fetch_rows(
        conn,
        _interruptions_sql(value, cut_minutes(query)),
        params(
            query,
            power=QUANTITIES["power"].key,
            voltage=QUANTITIES["voltage"].key,
            period_start=query.start,
            period_end=query.end,
            sustained_s=query.settings.sustained_outage_s,
        ),
    )


def saifi(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """ENE-1: customer interruptions (sustained) per customer served."""
    return _interruptions(conn, query, _SAIFI)


def saidi(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """ENE-2: minutes of sustained interruption per customer served; CAIDI in the detail."""
    return _interruptions(conn, query, _SAIDI)


def _renewable_share(cut: str | None) -> str:
    """ENE-3's statement (``cut``: the minutes its bounds cut, ``_sql.cut_minutes``)."""
    tiles = tiled("g.key", "g.bucket_start", "g.bucket_end", "%(energy)s", cut_minutes=cut)
    return f"""
WITH {BUCKETS_CTE},
registers AS (
    SELECT b.bucket_start, b.bucket_end, s.key, s.kind, s.district_id, s.interval_s,
           {EXPECTED_READINGS} AS expected_readings, {REGISTER_SPAN},
           coalesce((d.reference ->> 'grid_renewable_fraction')::float8, %(f_grid)s)
               AS f_grid
    FROM buckets b
    JOIN sensors s ON s.kind IN ('feeder_meter', 'solar_inverter') AND {SENSOR_EXPECTED}
    LEFT JOIN districts d ON d.id = s.district_id
),
register_spans AS (
    SELECT bucket_start, key, %(energy)s::smallint AS quantity_key, interval_s,
           span_start, span_end, start_bracketed, end_bracketed, end_running
    FROM registers
),
{REGISTER_INDEXES},
received AS (
    SELECT g.bucket_start, g.key, sum(r.count) AS n
    FROM registers g
    CROSS JOIN LATERAL {tiles} r
    GROUP BY 1, 2
),
energies AS (
    SELECT g.bucket_start, g.district_id, g.kind, g.f_grid, g.expected_readings,
           coalesce(rc.n, 0) AS n,
           ri.index_end - ri.index_start AS joules
    FROM registers g
    LEFT JOIN received rc ON rc.bucket_start = g.bucket_start AND rc.key = g.key
    LEFT JOIN register_indexes ri ON ri.bucket_start = g.bucket_start AND ri.key = g.key
),
shares AS (
    SELECT bucket_start, district_id,
           coalesce(sum(joules) FILTER (WHERE kind = 'solar_inverter'), 0) AS e_pv,
           coalesce(sum(joules) FILTER (WHERE kind = 'feeder_meter'), 0) AS e_feeder,
           coalesce(sum(joules * f_grid) FILTER (WHERE kind = 'feeder_meter'), 0) AS e_grid_green,
           count(*) FILTER (WHERE joules IS NOT NULL) AS sources_used,
           count(*) AS sources_expected,
           sum(least(n, expected_readings)) / nullif(sum(expected_readings), 0) AS completeness
    FROM energies
    GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
    HAVING {WANTED_GROUP}
)
SELECT bucket_start, district_id,
       100.0 * (e_pv + e_grid_green) / nullif(e_feeder + e_pv, 0) AS value,
       sources_used, sources_expected, completeness,
       jsonb_build_object('e_pv_kwh', e_pv / 3.6e6, 'e_feeder_kwh', e_feeder / 3.6e6,
                          'e_grid_renewable_kwh', e_grid_green / 3.6e6) AS detail
FROM shares
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def renewable_share(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """ENE-3: (E_pv + f_grid E_feeder) / (E_feeder + E_pv), in %."""
    return fetch_rows(
        conn,
        _renewable_share(cut_minutes(query)),
        params(
            query,
            energy=QUANTITIES["energy"].key,
            f_grid=query.settings.grid_renewable_fraction,
            register_tolerance=TOLERANCE_INTERVALS,
        ),
    )


COMPUTATIONS: Mapping[str, Computation] = {
    "ENE-1": saifi,
    "ENE-2": saidi,
    "ENE-3": renewable_share,
}
