"""The SQL that observes each rule's subjects: one query per condition, over ``readings_1m`` and
the registry (or the current KPI values, read through their owner
``services.storage.kpi_current``), never over raw readings, and always over a bounded time
range, so an evaluation costs the same on the first day and after a year of history.

Every query returns one row per subject the rule watches (its "candidates"), with the columns
``subject_id, district_id, domain, sensor_id, value, detail, verdict``; ``verdict`` is set by the
conditions that decide it themselves (``silent``, ``kpi_band``) and NULL for the valued ones, whose
raise/clear tests :func:`observe` wraps around ``value``. The states that come out:

- ``raise``: the raising condition holds now;
- ``clear``: the clearing condition holds now (outside the hysteresis band);
- ``hold``: in between, or too early to say (a sensor registered a minute ago);
- ``nodata``: no value to judge (no recent reading, not enough coverage);
- NULL (in :func:`observe`'s result): the subject is no longer a candidate at all (retired,
  moved out of the rule's district, its reference column emptied).

Times are judged at the *data horizon*: ``now``, or in partition mode the rollups' watermark when
it lags behind ``now``, so a stalled rollup refresher does not make every sensor look silent.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from gateway.kinds import KINDS, QUANTITIES
from services.storage import kpi_current

from ..catalog import KPIS
from ..engine import DAYS_PER_YEAR as YEAR_DAYS
from .rules import (
    Condition,
    KpiBandParams,
    NightFlowParams,
    OutsideParams,
    Rule,
    SilentParams,
    ValueParams,
)

_SENSORS = """
    SELECT key, id, kind, district_id, domain, interval_s,
           CASE %(relative_to)s::text
               WHEN 'free_flow_speed' THEN free_flow_speed
               WHEN 'rated_max' THEN rated_max
               ELSE 1.0 END AS ref
    FROM sensors
    WHERE status = 'active' AND kind = ANY(%(kinds)s::text[])
      AND (%(district)s::text IS NULL OR district_id = %(district)s::text)
"""

# The latest reading of the last two nominal intervals (or max_age_s), at least 5 minutes.
_LATEST_BODY = """
    SELECT s.id AS subject_id, s.district_id, s.domain, s.id AS sensor_id,
           x.last / s.ref AS value, jsonb_build_object('at', x.last_time) AS detail,
           NULL::text AS verdict
    FROM s LEFT JOIN LATERAL (
        SELECT r.last, r.last_time FROM readings_1m r
        WHERE r.sensor_key = s.key AND r.quantity_key = %(quantity_key)s
          AND r.bucket >= %(horizon)s - make_interval(
                  secs => coalesce(%(max_age_s)s, greatest(2 * s.interval_s, 300.0)))
          AND r.bucket < %(horizon)s
        ORDER BY r.bucket DESC LIMIT 1
    ) x ON true
    WHERE s.ref > 0
"""
_LATEST = f"WITH s AS ({_SENSORS}) {_LATEST_BODY}"

# The mean over a trailing window, when enough of the expected readings are there.
_WINDOW_BODY = """
    SELECT s.id AS subject_id, s.district_id, s.domain, s.id AS sensor_id,
           x.mean / s.ref AS value,
           jsonb_build_object('at', x.at, 'readings', x.n, 'window_s', %(window_s)s) AS detail,
           NULL::text AS verdict
    FROM s LEFT JOIN LATERAL (
        SELECT sum(r.sum) / sum(r.count) AS mean, sum(r.count) AS n, max(r.last_time) AS at
        FROM readings_1m r
        WHERE r.sensor_key = s.key AND r.quantity_key = %(quantity_key)s
          AND r.bucket >= %(horizon)s - make_interval(secs => %(window_s)s)
          AND r.bucket < %(horizon)s
        HAVING sum(r.count) > 0
           AND sum(r.count) >= %(min_coverage)s * %(window_s)s / s.interval_s
    ) x ON true
    WHERE s.ref > 0
"""
_WINDOW_MEAN = f"WITH s AS ({_SENSORS}) {_WINDOW_BODY}"

_SILENT_SENSORS = """
    WITH kq AS (
        SELECT * FROM unnest(%(kq_kinds)s::text[], %(kq_keys)s::smallint[]) AS kq(kind, qkey)
    ), s AS (
        SELECT key, id, kind, district_id, domain, coalesce(installed_at, created_at) AS since,
               make_interval(secs => greatest(%(intervals)s * interval_s, %(min_silence_s)s))
                   AS silence
        FROM sensors
        WHERE status = 'active' AND kind = ANY(%(kinds)s::text[])
          AND (%(district)s::text IS NULL OR district_id = %(district)s::text)
    )
    SELECT s.id AS subject_id, s.district_id, s.domain, s.id AS sensor_id,
           extract(epoch FROM %(horizon)s - l.at)::float8 AS value,
           jsonb_build_object('last_reading', l.at,
                              'silence_s', extract(epoch FROM s.silence)::float8) AS detail,
           CASE WHEN l.at >= %(horizon)s - s.silence THEN 'clear'
                WHEN s.since > %(horizon)s - s.silence THEN 'hold'
                ELSE 'raise' END AS verdict
    FROM s LEFT JOIN LATERAL (
        -- Only the kind's quantities: each is one range scan of the rollup's primary key.
        SELECT max(r.last_time) AS at
        FROM kq JOIN readings_1m r ON r.sensor_key = s.key AND r.quantity_key = kq.qkey
        WHERE kq.kind = s.kind
          AND r.bucket >= %(horizon)s - s.silence - interval '1 minute'
          AND r.bucket < %(horizon)s
    ) l ON true
"""

_SILENT_GATEWAYS = """
    SELECT g.id AS subject_id, g.district_id,
           (SELECT CASE WHEN count(DISTINCT domain) = 1 THEN min(domain) END
            FROM sensors WHERE gateway_id = g.id) AS domain,
           NULL::text AS sensor_id,
           extract(epoch FROM %(now)s - g.last_seen)::float8 AS value,
           jsonb_build_object('last_seen', g.last_seen, 'silence_s', %(min_silence_s)s) AS detail,
           CASE WHEN g.last_seen >= %(now)s - make_interval(secs => %(min_silence_s)s)
                    THEN 'clear'
                WHEN g.last_seen IS NULL
                     AND g.created_at > %(now)s - make_interval(secs => %(min_silence_s)s)
                    THEN 'hold'
                ELSE 'raise' END AS verdict
    FROM gateways g
    WHERE g.status = 'active'
      AND (%(district)s::text IS NULL OR g.district_id = %(district)s::text)
"""

# Night windows are local time: the district's reference utc_offset_s (what the registry
# manifest records), else UTC. Night 0 is the last night whose window ended by the horizon;
# nights 1..N make up the usual minimum. A night's minimum is the lowest 1-minute mean flow.
_NIGHT_FLOW = """
    WITH s AS (
        SELECT s.key, s.id, s.district_id, s.domain,
               make_interval(secs => coalesce((d.reference->>'utc_offset_s')::float8, 0)) AS off
        FROM sensors s LEFT JOIN districts d ON d.id = s.district_id
        WHERE s.status = 'active' AND s.kind = ANY(%(kinds)s::text[])
          AND (%(district)s::text IS NULL OR s.district_id = %(district)s::text)
    ), n AS (
        SELECT s.*, ((%(horizon)s AT TIME ZONE 'UTC') + s.off
                     - make_interval(secs => %(end_s)s))::date AS last_night
        FROM s
    ), w AS (
        SELECT n.key, i,
               ((n.last_night - i) + make_interval(secs => %(start_s)s) - n.off)
                   AT TIME ZONE 'UTC' AS lo,
               ((n.last_night - i) + make_interval(secs => %(end_s)s) - n.off)
                   AT TIME ZONE 'UTC' AS hi
        FROM n CROSS JOIN generate_series(0, %(nights)s) AS i
    ), m AS (
        SELECT w.key, w.i, min(r.sum / r.count) AS night_min
        FROM w JOIN readings_1m r
          ON r.sensor_key = w.key AND r.quantity_key = %(quantity_key)s
         AND r.bucket >= w.lo AND r.bucket < w.hi
        GROUP BY w.key, w.i
        HAVING count(*) >= %(min_minutes)s
    ), a AS (
        SELECT key,
               min(night_min) FILTER (WHERE i = 0) AS tonight,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY night_min) FILTER (WHERE i > 0)
                   AS usual,
               count(*) FILTER (WHERE i > 0) AS nights
        FROM m GROUP BY key
    )
    SELECT n.id AS subject_id, n.district_id, n.domain, n.id AS sensor_id,
           CASE WHEN a.tonight IS NOT NULL AND a.nights >= %(min_nights)s
                THEN a.tonight / greatest(a.usual, %(min_usual_flow)s) END AS value,
           jsonb_build_object('night', n.last_night, 'night_min', a.tonight,
                              'usual_min', a.usual, 'nights', coalesce(a.nights, 0)) AS detail,
           NULL::text AS verdict
    FROM n LEFT JOIN a ON a.key = n.key
"""

# A KPI that is insufficient_data says nothing about its band: no verdict either way. Nor does a
# period still running before its coverage rule holds for the whole period (see KpiBandParams):
# period coverage = the value's coverage ratio x the share of the period gone by, the period
# counted from the scope's first installation (a district installed yesterday owes nothing for
# the days before).
_KPI_BAND = f"""
    WITH k AS (
        SELECT k.*, c.domain,
               CASE WHEN extract(epoch FROM k.period_end - k.period_start) >= %(year_s)s
                    THEN c.annual_threshold ELSE c.threshold END AS threshold,
               greatest(k.period_start, (
                   SELECT min(coalesce(s.installed_at, '-infinity'::timestamptz))
                   FROM sensors s
                   WHERE s.status <> 'pending' AND (k.scope = 'city' OR s.district_id = k.scope)
               )) AS judged_from
        FROM ({kpi_current.CURRENT_ROWS}) k
        LEFT JOIN unnest(%(kpi_ids)s::text[], %(kpi_domains)s::text[],
                         %(kpi_thresholds)s::float8[], %(kpi_annual_thresholds)s::float8[])
                  AS c(kpi_id, domain, threshold, annual_threshold)
          ON c.kpi_id = k.kpi_id
        WHERE (%(kpi_id)s::text IS NULL OR k.kpi_id = %(kpi_id)s::text)
          AND (%(period)s::text IS NULL OR k.period = %(period)s::text)
          AND (%(district)s::text IS NULL OR k.scope = %(district)s::text)
    ), p AS (
        SELECT k.*,
               CASE WHEN NOT %(wait_for_coverage)s OR k.period_end <= %(now)s THEN NULL
                    ELSE coalesce((k.body->'coverage'->>'ratio')::float8, 0)
                         * greatest(0, extract(epoch FROM %(now)s - k.judged_from))
                         / nullif(extract(epoch FROM k.period_end - k.judged_from), 0)
               END AS period_coverage
        FROM k
    )
    SELECT p.kpi_id || '/' || p.scope || '/' || p.period AS subject_id,
           nullif(p.scope, 'city') AS district_id, p.domain, NULL::text AS sensor_id, p.value,
           jsonb_build_object('kpi_id', p.kpi_id, 'scope', p.scope, 'period', p.period,
                              'rating', p.rating, 'period_start', p.period_start,
                              'period_end', p.period_end,
                              'period_coverage', p.period_coverage) AS detail,
           CASE WHEN p.rating = 'insufficient_data' THEN 'hold'
                WHEN p.rating = ANY(%(ratings)s::text[])
                     AND coalesce(p.period_coverage >= p.threshold, true) THEN 'raise'
                WHEN p.rating = ANY(%(ratings)s::text[]) THEN 'hold'
                ELSE 'clear' END AS verdict
    FROM p
"""  # noqa: S608 - the only text put in is the owner's constant relation

# (raise, clear) tests on ``value`` per valued condition: at-or-beyond raises, strictly back
# inside the clear threshold clears, the band between holds.
_TESTS: dict[Condition, tuple[str, str]] = {
    Condition.ABOVE: ("value >= %(threshold)s", "value < %(clear_threshold)s"),
    Condition.NIGHT_FLOW: ("value >= %(threshold)s", "value < %(clear_threshold)s"),
    Condition.BELOW: ("value <= %(threshold)s", "value > %(clear_threshold)s"),
    Condition.OUTSIDE: (
        "value < %(low)s OR value > %(high)s",
        "value >= %(clear_low)s AND value <= %(clear_high)s",
    ),
    Condition.SILENT: ("false", "false"),
    Condition.KPI_BAND: ("false", "false"),
}

_OBSERVE = """
    WITH obs AS ({query}),
    st AS (
        SELECT subject_id, district_id, domain, sensor_id, value, detail,
               coalesce(verdict, CASE WHEN value IS NULL THEN 'nodata'
                                      WHEN {raise_test} THEN 'raise'
                                      WHEN {clear_test} THEN 'clear'
                                      ELSE 'hold' END) AS state
        FROM obs
    ), op AS (
        SELECT id, subject_id FROM alerts WHERE rule_id = %(rule_id)s AND state <> 'cleared'
    ), co AS (
        SELECT subject_id, since FROM alert_conditions WHERE rule_id = %(rule_id)s
    )
    SELECT coalesce(st.subject_id, op.subject_id, co.subject_id) AS subject_id,
           st.district_id, st.domain, st.sensor_id, st.value, st.detail, st.state,
           op.id AS alert_id, co.since
    FROM st
    FULL JOIN op ON op.subject_id = st.subject_id
    FULL JOIN co ON co.subject_id = coalesce(st.subject_id, op.subject_id)
    -- Only what may change: a raising subject, an open alert, a pending condition. The rest of
    -- the fleet stays in the database.
    WHERE st.state = 'raise' OR op.id IS NOT NULL OR co.since IS NOT NULL
"""


def _seconds(moment: time) -> float:
    return moment.hour * 3600.0 + moment.minute * 60.0 + moment.second


def _kinds_of(rule: Rule) -> list[str]:
    if rule.kind is not None:
        return [rule.kind]
    if rule.quantity is None:
        return list(KINDS)
    return [k.name for k in KINDS.values() if rule.quantity in k.quantities]


def _query(rule: Rule, horizon: datetime, now: datetime) -> tuple[str, dict[str, Any]]:
    """The observation query of ``rule`` and its parameters."""
    params: dict[str, Any] = {
        "rule_id": rule.id,
        "district": rule.district_id,
        "kinds": _kinds_of(rule),
        "horizon": horizon,
        "now": now,
        "threshold": rule.threshold,
        "clear_threshold": rule.clear_threshold,
        "quantity_key": QUANTITIES[rule.quantity].key if rule.quantity else None,
    }
    typed = rule.typed_params()
    if isinstance(typed, ValueParams):
        params.update(typed.model_dump())
        if isinstance(typed, OutsideParams):
            params["clear_low"] = typed.low if typed.clear_low is None else typed.clear_low
            params["clear_high"] = typed.high if typed.clear_high is None else typed.clear_high
        return (_WINDOW_MEAN if typed.window_s > 0 else _LATEST), params
    if isinstance(typed, SilentParams):
        params.update(typed.model_dump())
        if rule.subject == "gateway":
            return _SILENT_GATEWAYS, params
        pairs = [(k, QUANTITIES[q].key) for k in params["kinds"] for q in KINDS[k].quantities]
        params["kq_kinds"] = [k for k, _ in pairs]
        params["kq_keys"] = [q for _, q in pairs]
        return _SILENT_SENSORS, params
    if isinstance(typed, NightFlowParams):
        params.update(typed.model_dump(exclude={"start", "end"}))
        params["start_s"] = _seconds(typed.start)
        params["end_s"] = _seconds(typed.end)
        return _NIGHT_FLOW, params
    assert isinstance(typed, KpiBandParams)
    params.update(
        ratings=list(typed.ratings),
        period=typed.period,
        wait_for_coverage=typed.wait_for_coverage,
        kpi_id=rule.kpi_id,
        kpi_ids=list(KPIS),
        kpi_domains=[k.domain.value for k in KPIS.values()],
        kpi_thresholds=[k.threshold_for(1.0) for k in KPIS.values()],
        kpi_annual_thresholds=[k.threshold_for(YEAR_DAYS) for k in KPIS.values()],
        year_s=YEAR_DAYS * 86400.0,
    )
    return _KPI_BAND, params


def observe(
    conn: psycopg.Connection[Any], rule: Rule, horizon: datetime, now: datetime
) -> list[dict[str, Any]]:
    """The subjects of ``rule`` whose alert state may change: each with its state now
    (see the module docstring), its open alert's id and its pending condition's start."""
    query, params = _query(rule, horizon, now)
    raise_test, clear_test = _TESTS[rule.condition]
    statement = sql.SQL(_OBSERVE).format(
        query=sql.SQL(query),  # our own constant strings
        raise_test=sql.SQL(raise_test),
        clear_test=sql.SQL(clear_test),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(statement, params).fetchall()
