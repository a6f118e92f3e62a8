"""The emulation of Grafana's PostgreSQL expansions, against the expansions Grafana's own tests
state (pkg/tsdb/grafana-postgresql-datasource/macros_test.go, the format registry's tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.dashboards.grafana_datasource import (
    InterpolationError,
    Variable,
    format_interval,
    interpolate,
    replace_variables,
)

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
TO = FROM + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("sql", "expected", "timescaledb"),
    [
        ("select $__time(time_column)", 'select time_column AS "time"', False),
        ("select $__timeEpoch(time)", 'select extract(epoch from time) as "time"', False),
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
            False,
        ),
        (
            "GROUP BY $__timeGroup(time_column,'5m')",
            "GROUP BY floor(extract(epoch from time_column)/300)*300",
            False,
        ),
        (
            "GROUP BY $__timeGroup(time_column, '5m')",
            "GROUP BY time_bucket('300.000s',time_column)",
            True,
        ),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
            False,
        ),
        # Before 5.3 a trailing comma meant the aliased form.
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
            False,
        ),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'", False),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'", False),
        (
            "select $__unixEpochFilter(time)",
            "select time >= 1523556000 AND time <= 1523556300",
            False,
        ),
        ("select $__interval, $__interval_ms", "select 1m, 60000", False),
    ],
)
def test_macros_expand_as_grafana_does(sql: str, expected: str, timescaledb: bool) -> None:
    assert interpolate(sql, {}, FROM, TO, timedelta(minutes=1), timescaledb=timescaledb) == expected


def test_variables_quote_as_the_sql_datasource_does() -> None:
    multi = Variable(["d01", "o'neil"], multi=True, include_all=True)
    single = Variable("day")
    assert replace_variables("IN ($d)", {"d": multi}) == "IN ('d01','o''neil')"
    assert replace_variables("IN (${d:sqlstring})", {"d": multi}) == "IN ('d01','o''neil')"
    assert replace_variables("= '$p'", {"p": single}) == "= 'day'"
    assert replace_variables("= '[[p]]'", {"p": single}) == "= 'day'"
    assert replace_variables("${p:sqlstring}", {"p": Variable('say "hi"')}) == "'say \\\"hi\\\"'"
    # A one-value selection of a multi variable is still a quoted list.
    assert replace_variables("$d", {"d": Variable(["d01"], multi=True)}) == "'d01'"
    # Not a variable: left for the macro engine.
    assert replace_variables("$__timeFilter(t)", {"d": multi}) == "$__timeFilter(t)"


def test_format_interval_takes_the_largest_whole_unit() -> None:
    assert [format_interval(timedelta(seconds=s)) for s in (0.5, 30, 90, 3600, 86400 * 2)] == [
        "500ms",
        "30s",
        "1m",
        "1h",
        "2d",
    ]


@pytest.mark.parametrize("sql", ["$__timeFilter()", "$__timeGroup(t)", "$__nothing(t)"])
def test_a_macro_grafana_refuses_is_refused(sql: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(sql, {}, FROM, TO, timedelta(minutes=1))
