"""SQL pieces every KPI query shares: the buckets, the sensors expected, the rollup rows.

A query built on these reads the buckets as ``buckets(bucket_start, bucket_end, observed_end)``
(``observed_end`` is ``bucket_end`` capped at the transaction's ``now()``, so a period still
running expects readings only up to now) and binds :func:`params` (named parameters
``bucket_starts``, ``bucket_ends``, ``districts``); every value is a bind parameter.

A query reads rollup rows of a sensor over a range with :func:`tiled`, which answers any range
from the coarsest rollups that tile it exactly (whole UTC days, then hours, then minutes, then
the raw readings of a partial minute), so bounds off the hour cost what whole days cost. Its
``cut_minutes`` comes from :func:`cut_minutes`, so that raw readings are read (and planned) only
in the minutes a range cuts.

The fragments refer to the registry row as ``s`` and the bucket as ``b``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from services.storage import rollups

# Re-exported: the queries take it from here with the other fragments.
from services.storage.rollups import tiled as tiled  # noqa: PLC0414 (explicit re-export)

from ..model import KpiQuery, KpiRow

BUCKETS_CTE = """buckets AS (
    SELECT bucket_start, bucket_end, least(bucket_end, now()) AS observed_end
    FROM unnest(%(bucket_starts)s::timestamptz[], %(bucket_ends)s::timestamptz[])
        AS given(bucket_start, bucket_end)
)"""

# The sensor counts in bucket b: commissioned (not pending), installed before the bucket's
# observed end, not retired before its start (a retired sensor with no date is gone for good).
SENSOR_EXPECTED = """(s.status <> 'pending'
    AND NOT (s.status = 'retired' AND s.retired_at IS NULL)
    AND (s.installed_at IS NULL OR s.installed_at < b.observed_end)
    AND (s.retired_at IS NULL OR s.retired_at > b.bucket_start))"""

# Seconds of bucket b during which sensor s was in service (0 when none).
ACTIVE_SECONDS = """greatest(0.0, extract(epoch FROM
    least(b.observed_end, coalesce(s.retired_at, 'infinity'::timestamptz))
    - greatest(b.bucket_start, coalesce(s.installed_at, '-infinity'::timestamptz)))::float8)"""

# Readings sensor s owed in bucket b at its nominal interval (KPIS.md "expected readings").
EXPECTED_READINGS = f"({ACTIVE_SECONDS} / s.interval_s)"

# HAVING clause of a query grouped by GROUPING SETS ((bucket_start, district_id), (bucket_start))
# over a column named ``district_id``: keep the city row and the rows of the districts asked for,
# never a group of sensors that belong to no district.
WANTED_GROUP = """(grouping(district_id) = 1 OR (district_id IS NOT NULL
    AND (%(districts)s::text[] IS NULL OR district_id = ANY(%(districts)s::text[]))))"""


def params(query: KpiQuery, **extra: Any) -> dict[str, Any]:
    """The named parameters of the shared fragments (those of :func:`cut_minutes` too), plus the
    query's own."""
    starts, ends = query.bucket_arrays()
    districts = list(query.districts) if query.districts is not None else None
    _, cuts = _bucket_cuts(query)
    return {
        "bucket_starts": starts,
        "bucket_ends": ends,
        "districts": districts,
        **cuts,
        **extra,
    }


def fetch_rows(
    conn: psycopg.Connection[TupleRow],
    statement: sql.Composed | sql.SQL | str,
    values: dict[str, Any],
) -> list[KpiRow]:
    """Run a KPI query whose columns are (bucket_start, district_id, value, sources_used,
    sources_expected, completeness, detail) and return its rows as :class:`KpiRow`."""
    # Never prepared: a generic plan knows no bucket bound, so the raw legs of the minutes they
    # cut (``tiled``) would be planned over every partition of readings, pruned only as it starts.
    rows = conn.execute(statement, values, prepare=False).fetchall()
    return [
        KpiRow(
            bucket=bucket,
            district_id=district_id,
            value=None if value is None else float(value),
            sources_used=int(used or 0),
            sources_expected=int(expected or 0),
            completeness=None if completeness is None else float(completeness),
            detail=dict(detail or {}),
        )
        for bucket, district_id, value, used, expected, completeness, detail in rows
    ]


SERVICE_SPAN = """greatest(b.bucket_start, s.installed_at) AS service_start,
           least(b.observed_end, s.retired_at) AS service_end"""
"""A sensor's time in service within a bucket (up to now), as two columns."""

# The sensors of %(kind)s in service in each bucket and their local days (%(tz)s), cut at the
# bucket's edges, with the readings each sensor-day owes (up to now, for a bucket still running):
# the CTE ``sensor_days``: AIR and NOI count station-days on it, WST-1 container-days.
SENSOR_DAYS = f"""
WITH {BUCKETS_CTE},
in_service AS (
    SELECT b.bucket_start, b.bucket_end, s.key, s.id, s.district_id, s.interval_s,
           {SERVICE_SPAN}
    FROM buckets AS b
    JOIN sensors AS s ON s.kind = %(kind)s AND {SENSOR_EXPECTED}
),
sensor_days AS (
    SELECT st.*, days.day_start, days.day_end,
           greatest(extract(epoch FROM least(days.day_end, st.service_end)
                                       - greatest(days.day_start, st.service_start)), 0)
               / st.interval_s AS expected
    FROM in_service AS st
    CROSS JOIN LATERAL (
        SELECT greatest(st.bucket_start, local_day AT TIME ZONE %(tz)s) AS day_start,
               least(st.bucket_end, (local_day + interval '1 day') AT TIME ZONE %(tz)s)
                   AS day_end
        FROM generate_series(
            date_trunc('day', st.bucket_start AT TIME ZONE %(tz)s),
            (st.bucket_end AT TIME ZONE %(tz)s) - interval '1 microsecond',
            interval '1 day'
        ) AS local_day
    ) AS days
)
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


_DAY = timedelta(days=1)
_NO_OFFSET = timedelta(0)


def cut_minutes(query: KpiQuery, *, local_days: bool = False) -> str | None:
    """:func:`tiled`'s ``cut_minutes`` for the ranges ``query`` tiles: the minutes its bucket
    bounds cut (their parameters are in :func:`params`), or None. With ``local_days``
    (``SENSOR_DAYS``) the local midnights of the city's timezone bound ranges too: today's zones
    are whole minutes off UTC, older ones were not (Paris was UTC+00:09:21 until 1911), and a
    period with such midnights reads the raw readings of every minute it cuts (``"true"``)."""
    condition, _ = _bucket_cuts(query)
    if local_days and _midnights_off_minute(query):
        return "true"
    return condition


def _bucket_cuts(query: KpiQuery) -> tuple[str | None, dict[str, Any]]:
    return rollups.cut_minutes(moment for bucket in query.buckets for moment in bucket)


def _midnights_off_minute(query: KpiQuery) -> bool:
    zone = ZoneInfo(query.settings.timezone)
    # One sample a day finds every offset the zone takes in the period (none lasts under a day).
    moment = query.start
    while True:
        offset = moment.astimezone(zone).utcoffset() or _NO_OFFSET
        if offset % rollups.MINUTE:
            return True
        if moment >= query.end:
            return False
        moment = min(moment + _DAY, query.end)
