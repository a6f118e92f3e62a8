"""Every panel's query, as Grafana would send it, against a database holding a simulated city.

The panels come from the committed JSON (what Grafana is given). Each query is expanded the way
Grafana's PostgreSQL datasource expands it (``dashboards/grafana.py``: template variables, then
``$__interval``, then the macros), for the time ranges that pick each rollup (6 hours: minutes,
7 days: hours, 45 days: days) or the panel's own range, with every district selected and with
one; then run, and its result checked against what the panel type needs: a time series a
``time`` column, ascending, and a numeric value; a stat or bar gauge a numeric value; a geomap
latitude and longitude; a table any row. A panel whose query fails or returns nothing fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from dashboards import build
from dashboards.sql import by_span
from services.storage.urls import libpq_url
from tests.dashboards.grafana_datasource import Variable, interpolate, panel_interval

from .conftest import SeededCity

NUMERIC = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric
TIMES = {1114, 1184}  # timestamp, timestamptz
RANGES = (timedelta(hours=6), timedelta(days=1), timedelta(days=7), timedelta(days=45))
MIN_INTERVAL = timedelta(minutes=1)  # the datasource's timeInterval (provisioning)


def _committed() -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(build.GENERATED.glob("*.json"))
    ]


def _panels() -> Iterator[Any]:
    for model in _committed():
        for panel in build.panels(model):
            for target in panel["targets"]:
                yield pytest.param(
                    model, panel, target, id=f"{model['uid']}/{panel['title']}/{target['refId']}"
                )


PANELS = list(_panels())


def _variables(
    conn: psycopg.Connection[Any], model: dict[str, Any], district: str | None, city: SeededCity
) -> dict[str, Variable]:
    """Each variable's value: ``All`` expanded to its options (a query variable's options are
    its query's answer, run here too), or one district."""
    values: dict[str, Variable] = {}
    for variable in model["templating"]["list"]:
        name = variable["name"]
        if variable["type"] == "custom":
            options = [o.strip() for o in variable["query"].split(",")]
        else:
            sql = interpolate(
                variable["query"], values, city.now - timedelta(hours=6), city.now, MIN_INTERVAL
            )
            rows = conn.execute(sql).fetchall()
            assert rows, f"variable {name} has no options"
            options = [str(r[0]) for r in rows]
        if not variable.get("multi"):
            values[name] = Variable(variable["current"]["value"])
        elif name == "district" and district is not None:
            values[name] = Variable([district], multi=True, include_all=True)
        else:
            values[name] = Variable(options, multi=True, include_all=True)
    return values


def _ranges(panel: dict[str, Any]) -> tuple[timedelta, ...]:
    override = panel.get("timeFrom")
    if override:
        amount, unit = re.fullmatch(r"(\d+)([hd])", override).groups()  # type: ignore[union-attr]
        return (timedelta(**{"hours" if unit == "h" else "days": int(amount)}),)
    return RANGES


def _check(
    panel_type: str, target: dict[str, Any], cursor: psycopg.Cursor[Any], *, no_value: bool
) -> None:
    """``no_value``: the panel says what an empty value means (a KPI stat's "insufficient
    data"), so its value may be null as long as the row is there."""
    rows = cursor.fetchall()
    assert rows, "no rows"
    assert cursor.description is not None
    columns = [(c.name, c.type_code) for c in cursor.description]
    numeric = [i for i, (_, oid) in enumerate(columns) if oid in NUMERIC]
    if panel_type == "timeseries":
        assert target["format"] == "time_series"
        names = [n for n, _ in columns]
        assert "time" in names, f"no time column in {names}"
        t = names.index("time")
        assert columns[t][1] in TIMES | NUMERIC
        values = [i for i in numeric if i != t]
        assert values, f"no numeric value column in {columns}"
        times = [r[t] for r in rows]
        assert times == sorted(times), "a long-format series must be sorted by time"
        assert any(r[i] is not None for r in rows for i in values), "only nulls"
    elif panel_type == "stat":
        # The value a stat shows is its first column (the others are its target and change).
        assert 0 in numeric, f"the first column is not numeric: {columns}"
        assert no_value or any(r[0] is not None for r in rows), "no value"
    elif panel_type == "bargauge":
        assert numeric, f"no numeric column in {columns}"
        assert any(r[i] is not None for r in rows for i in numeric), "only nulls"
    elif panel_type == "geomap":
        names = [n for n, _ in columns]
        for field in ("latitude", "longitude"):
            assert field in names, field
            assert columns[names.index(field)][1] in NUMERIC, field
        assert all(r[names.index("latitude")] is not None for r in rows)
    else:
        assert panel_type == "table", panel_type


def check_panel(
    conn: psycopg.Connection[Any],
    city: SeededCity,
    model: dict[str, Any],
    panel: dict[str, Any],
    target: dict[str, Any],
    district: str | None,
) -> None:
    """Run one panel target over each of its ranges, as Grafana would, on ``conn`` (in
    autocommit) and check it returns what its panel needs; also run on a streaming standby by
    tests/deploy/test_grafana_replica.py."""
    variables = _variables(conn, model, district, city)
    # The provisioned datasource leaves TimescaleDB off (its expansion works in both
    # modes); in TimescaleDB mode the time_bucket expansion is run as well.
    flags = (False, True) if city.mode == "timescaledb" else (False,)
    for span in _ranges(panel):
        end = city.ready
        start = end - span
        for timescaledb in flags:
            sql = interpolate(
                target["rawSql"],
                variables,
                start,
                end,
                panel_interval(start, end, minimum=MIN_INTERVAL),
                timescaledb=timescaledb,
            )
            assert "$" not in sql, f"left unexpanded: {sql}"
            with conn.cursor() as cursor:
                cursor.execute(sql)  # type: ignore[arg-type]
                try:
                    _check(
                        panel["type"],
                        target,
                        cursor,
                        no_value="noValue" in panel.get("fieldConfig", {}).get("defaults", {}),
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc} over {span}\n{sql}") from None


@pytest.mark.slow
@pytest.mark.parametrize("district", [None, "d01"], ids=["all-districts", "d01"])
@pytest.mark.parametrize(("model", "panel", "target"), PANELS)
def test_panel_query_returns_what_its_panel_needs(
    seeded_city: SeededCity,
    model: dict[str, Any],
    panel: dict[str, Any],
    target: dict[str, Any],
    district: str | None,
) -> None:
    with psycopg.connect(libpq_url(seeded_city.url), autocommit=True) as conn:
        check_panel(conn, seeded_city, model, panel, target, district)


def test_no_panel_reads_raw_readings() -> None:
    for param in PANELS:
        _, _, target = param.values
        assert not re.search(r"\breadings\b(?!_)", target["rawSql"]), target["rawSql"]


def test_every_dashboard_has_panels_and_every_panel_a_query() -> None:
    models = _committed()
    assert {m["uid"] for m in models} == {
        "urbanpulse-city",
        "urbanpulse-water",
        "urbanpulse-energy",
        "urbanpulse-waste",
        "urbanpulse-traffic",
        "urbanpulse-environment",
        "urbanpulse-operations",
    }
    for model in models:
        for panel in build.panels(model):
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "urbanpulse-postgres"


@pytest.mark.parametrize(
    ("span", "rollup"),
    [
        (timedelta(hours=6), "readings_1m"),
        (timedelta(days=1), "readings_1m"),
        (timedelta(days=1, minutes=1), "readings_1h"),
        (timedelta(days=31), "readings_1h"),
        (timedelta(days=45), "readings_1d"),
        (timedelta(days=800), "readings_1d"),
    ],
)
def test_exactly_one_rollup_serves_each_range(
    postgres_server: str, span: timedelta, rollup: str
) -> None:
    sql = by_span("SELECT '{rollup}'::text AS chosen WHERE {span}")
    end = datetime.now(UTC)
    expanded = interpolate(sql, {}, end - span, end, MIN_INTERVAL)
    with psycopg.connect(libpq_url(postgres_server)) as conn:
        assert conn.execute(expanded).fetchall() == [(rollup,)]  # type: ignore[call-overload]
