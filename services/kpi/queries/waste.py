"""KPI computations of the waste domain: WST-1, container overflow rate (see ../catalog.py).

A container-day is one container's fill readings of one local day (``CitySettings.timezone``),
cut at the edges of the requested bucket; it is observed when it holds at least one reading and
overflowing when its maximum fill reached the overflow threshold: its district's
(``reference.overflow_threshold``, set with ``urbanpulse district set``) where the district has
one, else the city's ``CitySettings.overflow_threshold``. WST-1 = 100 x
overflowing container-days / observed container-days, per district and for the city. Fills
above 1.2 never reach the rollups (ingest quarantines them as sensor faults), so one glitch
cannot mark a day as overflowing.

The daily maximum is the maximum of the rollup rows that tile the local day (`_sql.tiled`:
whole UTC days, then hours, minutes and a cut minute's raw readings), so a city east or west of
Greenwich counts its own days, not UTC's, and the answer is exact either way.

Coverage: ``sources_used`` = containers with at least one observed day, ``sources_expected`` =
containers in service during the bucket; ``completeness`` = fill readings delivered (at most the
expected number per container-day) / fill readings expected at the container's nominal interval.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES

from ..model import Computation, KpiQuery, KpiRow
from ._sql import SENSOR_DAYS, WANTED_GROUP, cut_minutes, fetch_rows, params, tiled


def _overflow_rate(cut: str | None) -> str:
    """WST-1's statement after ``SENSOR_DAYS`` (``cut``: ``_sql.cut_minutes``)."""
    tiles = tiled("sd.key", "sd.day_start", "sd.day_end", "%(quantity)s", cut_minutes=cut)
    return f"""
, container_days AS (
    SELECT sd.bucket_start, sd.id, sd.district_id, sd.expected,
           coalesce(sum(r.count), 0) AS delivered, max(r.max) AS max_fill
    FROM sensor_days AS sd
    LEFT JOIN LATERAL {tiles} AS r
           ON true
    GROUP BY sd.bucket_start, sd.id, sd.district_id, sd.day_start, sd.expected
),
containers AS (
    SELECT cd.bucket_start, cd.id, cd.district_id,
           count(cd.max_fill) AS observed_days,
           -- the district's threshold where it sets one, else the city's (KPIS.md "registry")
           count(*) FILTER (
               WHERE cd.max_fill >= coalesce((d.reference ->> 'overflow_threshold')::float8,
                                             %(threshold)s)
           ) AS overflowing_days,
           sum(least(cd.delivered, cd.expected)) AS delivered,
           sum(cd.expected) AS expected
    FROM container_days AS cd
    LEFT JOIN districts AS d ON d.id = cd.district_id
    GROUP BY cd.bucket_start, cd.id, cd.district_id
)
SELECT bucket_start, district_id,
       100.0 * sum(overflowing_days) / nullif(sum(observed_days), 0) AS value,
       count(*) FILTER (WHERE observed_days > 0) AS sources_used,
       count(*) AS sources_expected,
       sum(delivered) / nullif(sum(expected), 0) AS completeness,
       jsonb_build_object(
           'container_days_observed', sum(observed_days),
           'container_days_overflowing', sum(overflowing_days)
       ) AS detail
FROM containers
GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
HAVING {WANTED_GROUP}
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def container_overflow_rate(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """WST-1: % of observed container-days whose maximum fill reached the overflow threshold."""
    statement = SENSOR_DAYS + _overflow_rate(cut_minutes(query, local_days=True))
    values = params(
        query,
        kind="waste_container",
        tz=query.settings.timezone,
        quantity=QUANTITIES["fill"].key,
        threshold=query.settings.overflow_threshold,
    )
    return fetch_rows(conn, statement, values)


COMPUTATIONS: Mapping[str, Computation] = {"WST-1": container_overflow_rate}
