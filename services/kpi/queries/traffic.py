"""KPI computations of the traffic domain: TRA-1 travel time index and TRA-2 traffic monitoring
coverage (see ../catalog.py). Each traffic counter stands for one road segment: its registry row
holds the segment's length, free-flow speed and road class.

TRA-1 looks only at the weekday peak windows (local time in ``CitySettings.timezone``, Monday
to Friday; public holidays are not known and count as weekdays): a segment's district's own
(``reference.peak_periods``, set with ``urbanpulse district set``) where it has them, else the
city's ``CitySettings.peak_periods``; the city figure sums every segment over its own windows.
Over every minute of those windows in which a segment counted vehicles (n > 0) and reported a
speed v > 0, it adds n L / v (the vehicle time spent) and n L / v_free (the same at
free flow); the index is the ratio of the two sums, so busy minutes and long segments weigh
most. It reads ``readings_1m``: one row a minute carries the vehicles counted (sum of the count
readings) and the mean speed (sum / count of the speed readings). At the counter's nominal
60-second interval that is exactly one interval; a counter reporting faster has its speeds
averaged within the minute (arithmetic, not vehicle-weighted), a small approximation; an
hourly rollup would have been much worse (n_hour L / mean v_hour hides congested minutes). A
minute with vehicles but no speed (speed is empty when the count is 0, missing otherwise) is left
out of both sums. Segments without a length or free-flow speed in the registry cannot count;
they stay in ``sources_expected``, so a registry gap lowers the coverage instead of hiding.
Coverage: ``sources_used`` = segments that contributed a minute, ``completeness`` = count
readings delivered in the peak windows / count readings expected there.

TRA-2 = 100 x km of major segments (``CitySettings.major_road_classes``) whose counter delivered
at least 75 % of the count readings expected in the bucket / km of major segments. Like ICT-1 it
measures the silence of the network itself: every major segment in service is a source used
(a silent counter is a measured "not monitored"), ``completeness`` is None, and how complete the
readings were is in ``detail`` (``reading_completeness``). A segment without a length counts in
the sources but adds no km.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES

from ..model import Computation, KpiQuery, KpiRow
from ._sql import (
    BUCKETS_CTE,
    EXPECTED_READINGS,
    SENSOR_EXPECTED,
    SERVICE_SPAN,
    WANTED_GROUP,
    cut_minutes,
    fetch_rows,
    params,
    tiled,
)

# The share of expected intervals a major segment's counter must deliver (KPIS.md TRA-2).
MONITORED_SHARE = 0.75

_TRAVEL_TIME_INDEX = f"""
WITH {BUCKETS_CTE},
-- Peak windows per set: a district's own (reference.peak_periods) under its id, the city's
-- under '' (no district id is empty).
district_peaks AS (
    SELECT d.id AS peak_set, (p.value ->> 0)::time AS peak_start, (p.value ->> 1)::time AS peak_end
    FROM districts AS d
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(d.reference -> 'peak_periods') = 'array'
             THEN d.reference -> 'peak_periods' ELSE '[]'::jsonb END
    ) AS p (value)
),
peaks AS (
    SELECT peak_set, peak_start, peak_end FROM district_peaks
    UNION ALL
    SELECT '', p.peak_start, p.peak_end
    FROM unnest(%(peak_starts)s::time[], %(peak_ends)s::time[]) AS p (peak_start, peak_end)
),
-- Every weekday peak window of each bucket, cut at its edges; a window ending at or before its
-- start runs past midnight, so the series starts a day early to catch the one that ends inside.
peak_windows AS (
    SELECT b.bucket_start, p.peak_set, w.window_start, w.window_end
    FROM buckets AS b
    CROSS JOIN LATERAL generate_series(
        date_trunc('day', b.bucket_start AT TIME ZONE %(tz)s) - interval '1 day',
        b.bucket_end AT TIME ZONE %(tz)s,
        interval '1 day'
    ) AS local_day
    CROSS JOIN peaks AS p
    CROSS JOIN LATERAL (
        SELECT greatest(b.bucket_start, (local_day::date + p.peak_start) AT TIME ZONE %(tz)s)
                   AS window_start,
               least(b.observed_end,
                     (local_day::date + p.peak_end
                      + CASE WHEN p.peak_end <= p.peak_start THEN interval '1 day'
                             ELSE interval '0' END) AT TIME ZONE %(tz)s) AS window_end
    ) AS w
    WHERE extract(isodow FROM local_day) <= 5 AND w.window_start < w.window_end
),
segments AS (
    SELECT b.bucket_start, s.key, s.district_id, s.interval_s,
           s.segment_length_m AS length_m, s.free_flow_speed,
           CASE WHEN EXISTS (SELECT 1 FROM district_peaks AS dp WHERE dp.peak_set = s.district_id)
                THEN s.district_id ELSE '' END AS peak_set,
           {SERVICE_SPAN}
    FROM buckets AS b
    JOIN sensors AS s ON s.kind = 'traffic_counter' AND {SENSOR_EXPECTED}
),
segment_windows AS (
    SELECT sg.*, pw.window_start, pw.window_end,
           greatest(extract(epoch FROM least(pw.window_end, sg.service_end)
                                       - greatest(pw.window_start, sg.service_start)), 0)
               / sg.interval_s AS expected
    FROM segments AS sg
    JOIN peak_windows AS pw ON pw.bucket_start = sg.bucket_start AND pw.peak_set = sg.peak_set
),
window_traffic AS (
    SELECT sw.bucket_start, sw.key, sw.window_start,
           sum(c.count) AS delivered,
           sum(c.sum * sw.length_m / (v.sum / v.count)) FILTER (WHERE usable) AS travel_s,
           sum(c.sum * sw.length_m / sw.free_flow_speed) FILTER (WHERE usable) AS free_flow_s
    FROM segment_windows AS sw
    JOIN readings_1m AS c
      ON c.sensor_key = sw.key AND c.quantity_key = %(count)s
     AND c.bucket >= sw.window_start AND c.bucket < sw.window_end
    LEFT JOIN readings_1m AS v
           ON v.sensor_key = sw.key AND v.quantity_key = %(speed)s AND v.bucket = c.bucket
    -- A minute adds to both sums or to neither.
    CROSS JOIN LATERAL (
        SELECT c.sum > 0 AND v.sum > 0 AND sw.length_m > 0 AND sw.free_flow_speed > 0 AS usable
    ) AS u
    GROUP BY sw.bucket_start, sw.key, sw.window_start
),
per_segment AS (
    SELECT sg.bucket_start, sg.key, sg.district_id,
           sum(sw.expected) AS expected,
           coalesce(sum(wt.delivered), 0) AS delivered,
           sum(wt.travel_s) AS travel_s,
           sum(wt.free_flow_s) AS free_flow_s
    FROM segments AS sg
    LEFT JOIN segment_windows AS sw ON sw.bucket_start = sg.bucket_start AND sw.key = sg.key
    LEFT JOIN window_traffic AS wt
           ON wt.bucket_start = sw.bucket_start AND wt.key = sw.key
          AND wt.window_start = sw.window_start
    GROUP BY sg.bucket_start, sg.key, sg.district_id
)
SELECT bucket_start, district_id,
       sum(travel_s) / nullif(sum(free_flow_s), 0) AS value,
       count(*) FILTER (WHERE free_flow_s > 0) AS sources_used,
       count(*) AS sources_expected,
       sum(least(delivered, expected)) / nullif(sum(expected), 0) AS completeness,
       jsonb_build_object(
           'vehicle_hours', sum(travel_s) / 3600,
           'free_flow_vehicle_hours', sum(free_flow_s) / 3600
       ) AS detail
FROM per_segment
GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
HAVING {WANTED_GROUP}
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def _monitoring_coverage(cut: str | None) -> str:
    """TRA-2's statement (``cut``: the minutes its bounds cut, ``_sql.cut_minutes``)."""
    tiles = tiled("sg.key", "sg.bucket_start", "sg.bucket_end", "%(count)s", cut_minutes=cut)
    return f"""
WITH {BUCKETS_CTE},
segments AS (
    SELECT b.bucket_start, b.bucket_end, s.key, s.district_id,
           s.segment_length_m / 1000 AS length_km, {EXPECTED_READINGS} AS expected
    FROM buckets AS b
    JOIN sensors AS s
      ON s.kind = 'traffic_counter' AND s.road_class = ANY(%(major)s::text[])
     AND {SENSOR_EXPECTED}
),
per_segment AS (
    SELECT sg.bucket_start, sg.district_id, sg.length_km, sg.expected,
           coalesce(sum(r.count), 0) AS delivered
    FROM segments AS sg
    LEFT JOIN LATERAL {tiles} AS r
           ON true
    GROUP BY sg.bucket_start, sg.key, sg.district_id, sg.length_km, sg.expected
),
judged AS (
    SELECT *, expected > 0 AND delivered >= %(monitored_share)s * expected AS monitored
    FROM per_segment
)
SELECT bucket_start, district_id,
       -- No value for a bucket nothing was owed in yet (one still to come).
       CASE WHEN sum(expected) > 0
            THEN 100 * coalesce(sum(length_km) FILTER (WHERE monitored), 0)
                 / nullif(sum(length_km), 0)
       END AS value,
       count(*) AS sources_used, count(*) AS sources_expected, NULL::float8 AS completeness,
       jsonb_build_object(
           'km_monitored', coalesce(sum(length_km) FILTER (WHERE monitored), 0),
           'km_major', coalesce(sum(length_km), 0),
           'segments_monitored', count(*) FILTER (WHERE monitored),
           'segments_reporting', count(*) FILTER (WHERE delivered > 0),
           'segments_without_length', count(*) FILTER (WHERE length_km IS NULL),
           'reading_completeness',
           sum(least(delivered, expected)) / nullif(sum(expected), 0)
       ) AS detail
FROM judged
GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
HAVING {WANTED_GROUP}
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def travel_time_index(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """TRA-1: vehicle time over the weekday peak windows divided by the same at free flow."""
    periods = query.settings.peak_periods
    values = params(
        query,
        tz=query.settings.timezone,
        peak_starts=[start for start, _ in periods],
        peak_ends=[end for _, end in periods],
        count=QUANTITIES["count"].key,
        speed=QUANTITIES["speed"].key,
    )
    return fetch_rows(conn, sql.SQL(_TRAVEL_TIME_INDEX), values)


def monitoring_coverage(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """TRA-2: % of major-road km whose counter delivered 75 % of its expected intervals."""
    values = params(
        query,
        major=list(query.settings.major_road_classes),
        count=QUANTITIES["count"].key,
        monitored_share=MONITORED_SHARE,
    )
    return fetch_rows(conn, _monitoring_coverage(cut_minutes(query)), values)


COMPUTATIONS: Mapping[str, Computation] = {
    "TRA-1": travel_time_index,
    "TRA-2": monitoring_coverage,
}
