"""KPI computations of the ICT domain (see ../catalog.py): ICT-1, smart electricity meters
reporting.

ICT-1 = 100 x smart meters (registry ``smart``; unset: the kind's default, smart) with at least
one valid reading in the bucket / electricity meters in service. A meter that is not smart
counts in the denominator only, even when readings of it arrive (read by hand and uploaded, say):
the indicator is the share of the meter fleet that is smart and reporting (U4SSC).

ICT-1 measures the network's silence itself, so its sources are the registry's meters: every
registered meter counts as used (a silent one is a measured "not reporting"), and the value is
only missing when a scope has no meters at all. How complete the meters' readings were is in
``detail`` (``reading_completeness``), not in the coverage: a KPI of reporting meters would
otherwise be "insufficient" exactly when it is bad.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg.rows import TupleRow

from gateway.kinds import KINDS

from ..model import Computation, KpiQuery, KpiRow
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


def _meters_reporting(cut: str | None) -> str:
    """ICT-1's statement (``cut``: the minutes its bounds cut, ``_sql.cut_minutes``)."""
    tiles = tiled("m.key", "m.bucket_start", "m.bucket_end", cut_minutes=cut)
    return f"""
WITH {BUCKETS_CTE},
meters AS (
    SELECT b.bucket_start, b.bucket_end, s.key, s.district_id,
           coalesce(s.smart, %(smart_default)s) AS smart,
           {EXPECTED_READINGS} AS expected_readings
    FROM buckets b JOIN sensors s ON s.kind = 'electricity_meter' AND {SENSOR_EXPECTED}
),
received AS (
    -- readings per meter and quantity; a meter's reading sets are those of its fullest quantity
    SELECT m.bucket_start, m.key, r.quantity_key, sum(r.count) AS n
    FROM meters m
    CROSS JOIN LATERAL {tiles} r
    GROUP BY 1, 2, 3
),
per_meter AS (
    SELECT m.bucket_start, m.district_id, m.smart, m.expected_readings,
           coalesce(max(rc.n), 0) AS n
    FROM meters m LEFT JOIN received rc ON rc.bucket_start = m.bucket_start AND rc.key = m.key
    GROUP BY m.bucket_start, m.key, m.district_id, m.smart, m.expected_readings
)
SELECT bucket_start, district_id,
       100.0 * count(*) FILTER (WHERE smart AND n > 0) / nullif(count(*), 0) AS value,
       count(*) AS sources_used, count(*) AS sources_expected, NULL::float8 AS completeness,
       jsonb_build_object(
           'meters_reporting', count(*) FILTER (WHERE smart AND n > 0),
           'smart_meters', count(*) FILTER (WHERE smart),
           'meters_registered', count(*),
           'reading_completeness',
           sum(least(n, expected_readings)) / nullif(sum(expected_readings), 0)
       ) AS detail
FROM per_meter
GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
HAVING {WANTED_GROUP}
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def meters_reporting(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """ICT-1: % of registered electricity meters that are smart and have at least one reading in
    the bucket."""
    values = params(query, smart_default=bool(KINDS["electricity_meter"].smart))
    return fetch_rows(conn, _meters_reporting(cut_minutes(query)), values)


COMPUTATIONS: Mapping[str, Computation] = {"ICT-1": meters_reporting}
