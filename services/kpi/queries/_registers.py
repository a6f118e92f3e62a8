"""Cumulative registers read at the bucket boundaries: the SQL every register KPI shares (WAT-1's
customer meters, ENE-3's energy registers).

``KPIS.md`` defines a register's consumption in a period as the index at its end minus the index
at its start. A register is read every ``interval_s`` seconds, never exactly at a boundary, so the
index at a boundary is interpolated linearly between the last reading at or before it and the
first reading at or after it (the next bucket's first reading included). Neighbouring buckets
share the boundary and its index, so the consumptions of consecutive buckets add up to the
consumption of the whole span: nothing used at night is spread over the day, nothing is lost or
counted twice between buckets.

A boundary is read only when both readings that bracket it lie within the tolerance,
:data:`TOLERANCE_INTERVALS` times the sensor's nominal interval, of it; a register with an unread
boundary is *unread* in that bucket (no consumption, not a source used). Three ends of a span have
one side only, because the other cannot exist yet or at all:

- the sensor's installation inside the bucket: the first reading after it;
- its retirement inside the bucket: the last reading before it;
- now, the end of a bucket still running: the last reading, carried to now at the rate between
  it and the reading before (both within the tolerance). Stopping at the last reading instead
  would leave up to an interval of use out of a balance whose other side (WAT-1's inflow) runs
  to now: at 00:10 every meter read at 00:00 would show no use at all, and the day 100 % lost.

The readings come from ``readings_1m``'s first and last columns (and their times): two index
probes per register and boundary (three at now), each stopping at the first row it finds, so the
cost grows with registers x buckets, never with the readings in a bucket or the period's length.

Use: a query defines the CTE ``register_spans`` with the columns ``bucket_start, key,
quantity_key, interval_s`` and those of :data:`REGISTER_SPAN` (over ``b`` and ``s``, see
``_sql.py``), then
appends ``,`` and :data:`REGISTER_INDEXES`, and reads ``register_indexes(bucket_start, key,
index_start, index_end)`` (an index NULL where the register is unread); it binds
``register_tolerance`` to :data:`TOLERANCE_INTERVALS`.
"""

from __future__ import annotations

# Tolerance of a boundary, in nominal intervals on each side. A register that lost one reading
# next to a boundary still has one two intervals away, with a whole interval to spare for clock
# jitter and transport; two readings lost in a row are the start of an outage, not a hiccup, and
# the register is reported unread rather than guessed over. Interpolating over such a gap moves at
# most the gap's consumption between two neighbouring buckets (never in or out of their sum).
TOLERANCE_INTERVALS = 3.0

REGISTER_SPAN = """greatest(b.bucket_start, s.installed_at) AS span_start,
           least(b.observed_end, s.retired_at) AS span_end,
           (s.installed_at IS NULL OR s.installed_at < b.bucket_start) AS start_bracketed,
           (b.bucket_end <= now() AND (s.retired_at IS NULL OR s.retired_at > b.bucket_end))
               AS end_bracketed,
           (b.bucket_end > now() AND (s.retired_at IS NULL OR s.retired_at > now()))
               AS end_running"""
"""A register's span in bucket ``b`` (its time in service up to now) and what each end of it is:
a boundary to bracket, or else the sensor's installation, its retirement or now (running)."""

# The rollup row at or before a boundary holds the last reading at or before it (its ``last``, or
# its ``first`` when the row straddles the boundary); the row at or after holds the first reading
# at or after it. ORDER BY bucket ... LIMIT 1 walks the primary key (sensor_key, quantity_key,
# bucket) and stops at the nearest row. A boundary on a whole UTC hour (nearly all of them) is
# probed in ``readings_1h``, where no row straddles it and a tolerance spans one or two rows
# instead of one per reading: 2.5 times faster on a week of hourly buckets (bench_registers).
# Any other boundary is probed in ``readings_1m`` (inside a straddling minute, the minute's first
# and last reading bracket it).
_ROLLUPS = (("readings_1h", "1 hour", "e.on_hour"), ("readings_1m", "1 minute", "NOT e.on_hour"))


def _nearest(before: bool) -> str:
    """The lateral subquery of the reading nearest a boundary ``e.edge`` on one side."""
    if before:
        pick, order = "r.last_time <= e.edge", " DESC"
        window = "r.bucket <= e.edge AND r.bucket > e.edge - e.tolerance - interval '{width}'"
        reaches = "r.first_time <= e.edge"
        time = f"CASE WHEN {pick} THEN r.last_time ELSE r.first_time END"
        value = f"CASE WHEN {pick} THEN r.last ELSE r.first END"
    else:
        pick, order = "r.first_time >= e.edge", ""
        window = "r.bucket > e.edge - interval '{width}' AND r.bucket <= e.edge + e.tolerance"
        reaches = "r.last_time >= e.edge"
        time = f"CASE WHEN {pick} THEN r.first_time ELSE r.last_time END"
        value = f"CASE WHEN {pick} THEN r.first ELSE r.last END"
    branches = [
        f"""(SELECT {time} AS time, {value} AS value
         FROM {rollup} AS r
         WHERE {gate} AND r.sensor_key = e.key AND r.quantity_key = e.quantity_key
           AND {window.format(width=width)} AND {reaches}
         ORDER BY r.bucket{order}
         LIMIT 1)"""  # noqa: S608 (this module's constant fragments)
        for rollup, width, gate in _ROLLUPS
    ]
    return "\n        UNION ALL\n        ".join(branches)


REGISTER_INDEXES = f"""register_edges AS (
    SELECT key, quantity_key, edge,
           make_interval(secs => interval_s * %(register_tolerance)s) AS tolerance,
           date_bin('1 hour', edge, '1970-01-01Z') = edge AS on_hour,
           bool_or(running) AS running
    FROM register_spans
    CROSS JOIN LATERAL (VALUES (span_start, false), (span_end, end_running)) AS e(edge, running)
    WHERE span_end > span_start
    GROUP BY key, quantity_key, edge, interval_s
),
register_brackets AS (
    SELECT e.key, e.quantity_key, e.edge,
           pre.time AS pre_time, pre.value AS pre_value,
           post.time AS post_time, post.value AS post_value,
           prev.time AS prev_time, prev.value AS prev_value
    FROM register_edges AS e
    LEFT JOIN LATERAL (
        {_nearest(before=True)}
    ) AS pre ON pre.time >= e.edge - e.tolerance
    LEFT JOIN LATERAL (
        {_nearest(before=False)}
    ) AS post ON post.time <= e.edge + e.tolerance
    -- now, in a running bucket: the reading before the last one, for the rate to carry it on
    LEFT JOIN LATERAL (
        SELECT CASE WHEN r.last_time < pre.time THEN r.last_time ELSE r.first_time END AS time,
               CASE WHEN r.last_time < pre.time THEN r.last ELSE r.first END AS value
        FROM readings_1m AS r
        WHERE e.running
          AND r.sensor_key = e.key AND r.quantity_key = e.quantity_key
          AND r.bucket <= pre.time AND r.bucket > pre.time - e.tolerance - interval '1 minute'
          AND r.first_time < pre.time
        ORDER BY r.bucket DESC
        LIMIT 1
    ) AS prev ON prev.time >= pre.time - e.tolerance
),
register_marks AS (
    -- NULL unless both sides were found; one reading at the boundary is both sides
    SELECT key, quantity_key, edge, pre_value, post_value,
           CASE WHEN post_time = pre_time THEN pre_value
                ELSE pre_value + (post_value - pre_value)
                     * extract(epoch FROM edge - pre_time)::float8
                     / extract(epoch FROM post_time - pre_time)::float8
           END AS interpolated,
           -- a register never runs backwards: a faulty pair carries the last reading as it is
           CASE WHEN pre_time = edge THEN pre_value
                ELSE pre_value + greatest(pre_value - prev_value, 0)
                     * extract(epoch FROM edge - pre_time)::float8
                     / extract(epoch FROM pre_time - prev_time)::float8
           END AS extrapolated
    FROM register_brackets
),
register_indexes AS (
    SELECT sp.bucket_start, sp.key,
           CASE WHEN sp.start_bracketed THEN m0.interpolated ELSE m0.post_value END
               AS index_start,
           CASE WHEN sp.end_bracketed THEN m1.interpolated
                WHEN sp.end_running THEN m1.extrapolated
                ELSE m1.pre_value END AS index_end
    FROM register_spans AS sp
    JOIN register_marks AS m0
      ON m0.key = sp.key AND m0.quantity_key = sp.quantity_key AND m0.edge = sp.span_start
    JOIN register_marks AS m1
      ON m1.key = sp.key AND m1.quantity_key = sp.quantity_key AND m1.edge = sp.span_end
)"""  # noqa: S608 (this module's constant fragments; values are bind parameters)
