"""Raw SQL for Grafana's PostgreSQL datasource, and the rollup each time range reads.

The foundation SDK has no SQL query builder, so every panel's query goes through :func:`raw_sql`,
which wraps the query model Grafana stores (``rawSql``, ``format``) in the SDK's
``UnknownDataquery``. :func:`by_span` writes a time-series query once and runs it against the
rollup that suits the dashboard's time range: one ``UNION ALL`` branch per rollup, each guarded by
a condition on the range's length, which PostgreSQL folds to a one-time filter, so only one
branch touches its table. Raw ``readings`` are never read.
"""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import dashboard

# Grafana 10.3+ names the built-in PostgreSQL datasource plugin this way ("postgres" before).
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_UID = "urbanpulse-postgres"
DATASOURCE = dashboard.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)

Format = Literal["time_series", "table"]

# (rollup, bucket width in seconds, longest range it serves). A day of minute buckets is at most
# 1,440 points a series; a month of hours 744; beyond, days.
ROLLUPS: tuple[tuple[str, int, str | None], ...] = (
    ("readings_1m", 60, "1 day"),
    ("readings_1h", 3600, "31 days"),
    ("readings_1d", 86400, None),
)
_SPAN = "($__timeTo()::timestamptz - $__timeFrom()::timestamptz)"


class _RawSql(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: UnknownDataquery) -> None:
        self._query = query

    def build(self) -> cogvariants.Dataquery:
        return self._query


def raw_sql(sql: str, fmt: Format = "time_series", ref_id: str = "A") -> _RawSql:
    """A PostgreSQL target with raw SQL, as Grafana's code editor saves it."""
    return _RawSql(
        UnknownDataquery(
            {
                "refId": ref_id,
                "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
                "editorMode": "code",
                "format": fmt,
                "rawQuery": True,
                "rawSql": sql.strip(),
            }
        )
    )


def by_span(template: str) -> str:
    """``template`` once per rollup, each branch for its range lengths, the branches joined.

    The template holds ``{rollup}`` (the table), ``{width}`` (its bucket in seconds) and
    ``{span}`` (the range guard, to put in its WHERE clause); an ORDER BY goes after the union.
    """
    branches = []
    shortest = "0"
    for rollup, width, longest in ROLLUPS:
        guard = f"{_SPAN} > interval '{shortest}'" if shortest != "0" else "true"
        if longest is not None:
            guard += f" AND {_SPAN} <= interval '{longest}'"
            shortest = longest
        # str.replace, not format: the SQL holds Grafana's ${var:format} braces.
        branch = template.strip().replace("{rollup}", rollup).replace("{width}", str(width))
        branches.append(branch.replace("{span}", guard))
    return "\nUNION ALL\n".join(branches) + "\nORDER BY 1"


def quantity(name: str, alias: str = "r") -> str:
    """The join condition selecting one quantity by name (keys live in the quantities table)."""
    return f"{alias}.quantity_key = (SELECT key FROM quantities WHERE name = '{name}')"


DISTRICTS = "${district:sqlstring}"
DOMAINS = "${domain:sqlstring}"
