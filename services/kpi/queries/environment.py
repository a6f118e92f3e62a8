"""KPI computations of the environment domain: AIR-1, AIR-2, AIR-3 and NOI-1 (see ../catalog.py).

All four are built on station-days: a station's readings of one local day (``CitySettings.
timezone``), cut at the edges of the requested bucket, so an hourly bucket's "day" is that hour.
A station-day is valid when the station delivered at least 75 % of the readings expected in it
(``KPIS.md``): expected = the seconds of the day the station was in service (between
``installed_at`` and ``retired_at``) divided by its nominal ``interval_s``. Counting the real
length of the day rather than 86 400 s keeps the rule right on the 23- and 25-hour days of a
daylight-saving change.

Values per bucket:

- AIR-n: a station-day's value is its arithmetic mean; a station's value over the bucket is the
  mean of its valid station-days (one per bucket for daily buckets); a district's value is its
  worst (highest) valid station, as ``KPIS.md`` says. The city's value is the worst valid
  station of the whole city, which is also the worst district: the same "worst place" reading
  of the WHO guideline, not an average that would let a clean suburb hide a polluted centre.
- NOI-1: per station-day, Ld, Le and Ln are energy means over the local hours 07-19, 19-23 and
  23-07 of that calendar day (the night is the early morning plus the late evening of the same
  date, so a daily bucket holds everything it needs); Lden combines them as ``KPIS.md`` says and
  is defined only when all three periods have readings. A station's value over the bucket is
  the energy mean of its valid daily Lden; district and city take the loudest station.

Coverage per row: ``sources_used`` = stations with at least one valid station-day,
``sources_expected`` = stations in service during the bucket (``_sql.SENSOR_EXPECTED``: not
pending, installed before it, not retired before it), ``completeness`` = readings delivered (at
most the expected number per station-day) / readings expected. A bucket still running owes
readings only up to now. A district without a station has no row (the engine reports it as
insufficient data).

Rollups and approximations:

- AIR's means are exact (count and sum): each station-day reads the coarsest rollups that tile
  it (`_sql.tiled`): ``readings_1d`` for its whole UTC days, ``readings_1h`` and
  ``readings_1m`` at its edges (a local day in a zone off UTC), raw readings for a cut minute.
- NOI-1 needs energy means, which the rollups do not hold: they keep the sum of dB values, and
  the mean of dB values understates the energy mean. It reads ``readings_1m`` and treats each
  minute's mean level as the level of each of its readings: exact for the noise kind's nominal
  60-second interval (one reading a minute), an underestimate within a minute when a meter
  reports faster. The cost is one rollup row per station-minute: an annual NOI-1 reads about
  half a million rows per station.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES

from ..model import Computation, KpiQuery, KpiRow
from ._sql import SENSOR_DAYS, WANTED_GROUP, cut_minutes, fetch_rows, params, tiled

# The share of expected readings that makes a station-day valid (KPIS.md, EU 2008/50/EC).
VALID_DAY_SHARE = 0.75


# From station_values (bucket_start, id, district_id, value, valid_days, delivered, expected)
# to one row per district asked for and one for the city: the worst station.
_WORST_STATION_PER_SCOPE = f"""
SELECT bucket_start, district_id, max(value) AS value,
       count(value) AS sources_used, count(*) AS sources_expected,
       sum(delivered) / nullif(sum(expected), 0) AS completeness,
       jsonb_build_object(
           'worst_station',
           (array_agg(id ORDER BY value DESC) FILTER (WHERE value IS NOT NULL))[1],
           'valid_station_days', sum(valid_days)
       ) AS detail
FROM station_values
GROUP BY GROUPING SETS ((bucket_start, district_id), (bucket_start))
HAVING {WANTED_GROUP}
ORDER BY bucket_start, district_id NULLS LAST
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


def _air_days(cut: str | None) -> str:
    """AIR-n's station values after ``SENSOR_DAYS`` (``cut``: ``_sql.cut_minutes``)."""
    tiles = tiled("sd.key", "sd.day_start", "sd.day_end", "%(quantity)s", cut_minutes=cut)
    return f"""
, day_means AS (
    SELECT sd.bucket_start, sd.id, sd.district_id, sd.expected,
           coalesce(sum(r.count), 0) AS delivered, sum(r.sum) / sum(r.count) AS mean
    FROM sensor_days AS sd
    LEFT JOIN LATERAL {tiles} AS r ON true
    GROUP BY sd.bucket_start, sd.id, sd.district_id, sd.day_start, sd.expected
),
station_values AS (
    SELECT bucket_start, id, district_id,
           avg(mean) FILTER (WHERE valid) AS value,
           count(*) FILTER (WHERE valid) AS valid_days,
           sum(least(delivered, expected)) AS delivered,
           sum(expected) AS expected
    FROM (
        SELECT *, expected > 0 AND delivered >= %(valid_share)s * expected AS valid
        FROM day_means
    ) AS days
    GROUP BY bucket_start, id, district_id
)
"""  # noqa: S608 (the text is this package's constant fragments; values are bind parameters)


# Energy is 10^(L/10); every reading of a minute counts with that minute's mean level.
_NOISE = """
, periods AS (
    SELECT sd.bucket_start, sd.id, sd.day_start,
           CASE WHEN local_hour >= 7 AND local_hour < 19 THEN 'day'
                WHEN local_hour >= 19 AND local_hour < 23 THEN 'evening'
                ELSE 'night' END AS period,
           sum(r.count) AS delivered,
           10 * log(sum(r.count * power(10::float8, r.sum / r.count / 10)) / sum(r.count))
               AS level
    FROM sensor_days AS sd
    JOIN readings_1m AS r
      ON r.sensor_key = sd.key AND r.quantity_key = %(quantity)s
     AND r.bucket >= sd.day_start AND r.bucket < sd.day_end
    CROSS JOIN LATERAL (SELECT extract(hour FROM r.bucket AT TIME ZONE %(tz)s) AS local_hour) AS lh
    GROUP BY sd.bucket_start, sd.id, sd.day_start, period
),
day_levels AS (
    SELECT sd.bucket_start, sd.id, sd.district_id, sd.expected,
           coalesce(sum(p.delivered), 0) AS delivered,
           max(p.level) FILTER (WHERE p.period = 'day') AS ld,
           max(p.level) FILTER (WHERE p.period = 'evening') AS le,
           max(p.level) FILTER (WHERE p.period = 'night') AS ln
    FROM sensor_days AS sd
    LEFT JOIN periods AS p
           ON p.bucket_start = sd.bucket_start AND p.id = sd.id AND p.day_start = sd.day_start
    GROUP BY sd.bucket_start, sd.id, sd.district_id, sd.day_start, sd.expected
),
day_lden AS (
    SELECT *,
           10 * log((12 * power(10::float8, ld / 10) + 4 * power(10::float8, (le + 5) / 10)
                     + 8 * power(10::float8, (ln + 10) / 10)) / 24) AS lden,
           expected > 0 AND delivered >= %(valid_share)s * expected
               AND ld IS NOT NULL AND le IS NOT NULL AND ln IS NOT NULL AS valid
    FROM day_levels
),
station_values AS (
    SELECT bucket_start, id, district_id,
           10 * log(avg(power(10::float8, lden / 10)) FILTER (WHERE valid)) AS value,
           count(*) FILTER (WHERE valid) AS valid_days,
           sum(least(delivered, expected)) AS delivered,
           sum(expected) AS expected
    FROM day_lden
    GROUP BY bucket_start, id, district_id
)
"""


def _run(
    conn: psycopg.Connection[TupleRow],
    query: KpiQuery,
    per_station: str,
    *,
    kind: str,
    quantity: str,
) -> list[KpiRow]:
    statement = SENSOR_DAYS + per_station + _WORST_STATION_PER_SCOPE
    values = params(
        query,
        kind=kind,
        tz=query.settings.timezone,
        quantity=QUANTITIES[quantity].key,
        valid_share=VALID_DAY_SHARE,
    )
    return fetch_rows(conn, statement, values)


def _air(quantity: str) -> Computation:
    def compute(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
        per_station = _air_days(cut_minutes(query, local_days=True))
        return _run(conn, query, per_station, kind="air_quality", quantity=quantity)

    compute.__name__ = f"air_{quantity}"
    compute.__doc__ = f"Worst valid station's mean {quantity} per district and for the city."
    return compute


def noise_lden(conn: psycopg.Connection[TupleRow], query: KpiQuery) -> list[KpiRow]:
    """NOI-1: the loudest station's Lden per district and for the city."""
    return _run(conn, query, _NOISE, kind="noise", quantity="laeq")


COMPUTATIONS: Mapping[str, Computation] = {
    "AIR-1": _air("pm25"),
    "AIR-2": _air("pm10"),
    "AIR-3": _air("no2"),
    "NOI-1": noise_lden,
}
