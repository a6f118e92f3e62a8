"""Every provisioned dashboard's panel and variable queries, run on a connection as Grafana
would send them, collecting what the server refuses for lack of privilege: the check that
Grafana's read-only role (migration 0006) can draw every panel, on the primary
(tests/deploy/test_roles.py) and on a streaming standby (tests/deploy/test_grafana_replica.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg

from dashboards import build

from .grafana_datasource import Variable, interpolate


def panel_queries() -> Iterator[tuple[str, dict[str, Any], str]]:
    """(dashboard uid, dashboard model, raw SQL) of every panel target in the committed JSON."""
    for path in sorted(build.GENERATED.glob("*.json")):
        model = json.loads(path.read_text(encoding="utf-8"))
        for panel in build.panels(model):
            for target in panel["targets"]:
                yield model["uid"], model, target["rawSql"]


def refused_queries(
    conn: psycopg.Connection[Any], start: datetime, end: datetime
) -> tuple[int, list[tuple[str, str, str]]]:
    """Run every panel query over [start, end] (variables and query variables expanded, the
    latter run too): how many ran, and (dashboard, query or variable, error) for each refused.
    ``conn`` must be in autocommit: one refusal must not abort the next query."""
    ran = 0
    refused = []
    for uid, model, query in panel_queries():
        values: dict[str, Variable] = {}
        for variable in model["templating"]["list"]:
            if variable["type"] == "custom":
                options = [o.strip() for o in variable["query"].split(",")]
                values[variable["name"]] = Variable(options[0])
            else:
                # A query variable's own query runs under the role too.
                expanded = interpolate(variable["query"], values, start, end, timedelta(minutes=1))
                try:
                    rows = conn.execute(expanded).fetchall()
                except psycopg.errors.InsufficientPrivilege as exc:
                    refused.append((uid, variable["name"], str(exc)))
                    rows = []
                options = [str(r[0]) for r in rows] or ["d01"]
                values[variable["name"]] = Variable(options, multi=True, include_all=True)
        try:
            conn.execute(interpolate(query, values, start, end, timedelta(minutes=1)))
            ran += 1
        except psycopg.errors.InsufficientPrivilege as exc:
            refused.append((uid, query[:60], str(exc)))
    return ran, refused
