"""What Grafana does to a PostgreSQL panel's SQL before the database sees it, as pure functions,
so the query tests run exactly the text Grafana would run.

Three steps, in Grafana's order (Grafana 11.6 sources):

1. the browser's template service replaces variables (``public/app/features/templating/
   template_srv.ts``) through the SQL datasource's ``interpolateVariable``
   (``packages/grafana-sql/src/datasource/SqlDatasource.ts``): a multi-value or include-all
   variable's values are quoted and joined with commas, a single-value one goes in as is
   (quotes doubled); an explicit format such as ``${var:sqlstring}`` uses the format registry
   (each value quoted, ``'`` doubled, ``"`` backslashed, joined with commas);
2. the backend's global substitutions (``pkg/tsdb/grafana-postgresql-datasource/sqleng/
   sql_engine.go``, ``Interpolate``): ``$__interval_ms``, ``$__interval``
   (``gtime.FormatInterval``), ``$__unixEpochFrom()``, ``$__unixEpochTo()``;
3. the PostgreSQL macro engine (``.../grafana-postgresql-datasource/macros.go``): ``$__time``,
   ``$__timeEpoch``, ``$__timeFilter``, ``$__timeFrom``, ``$__timeTo``, ``$__timeGroup`` and
   ``$__timeGroupAlias`` (``time_bucket`` when the datasource has TimescaleDB on, else
   ``floor(extract(epoch ...))``), ``$__unixEpochFilter``, ``$__unixEpochGroup(Alias)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ALL = "$__all"

# template_srv.ts's variableRegex: $var, [[var:fmt]], ${var.path:fmt}
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)
# macros.go's sExpr
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


class InterpolationError(ValueError):
    """A macro Grafana would refuse (unknown, or missing an argument)."""


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable's current value as the template service sees it: a string, or a
    list for a multi-value selection (``All`` already expanded to every option's value)."""

    value: str | Sequence[str]
    multi: bool = False
    include_all: bool = False


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _datasource_format(value: str | Sequence[str], variable: Variable) -> str:
    """SqlDatasource.interpolateVariable."""
    if isinstance(value, str):
        if variable.multi or variable.include_all:
            return _quote(value)
        return value.replace("'", "''")
    return ",".join(_quote(v) for v in value)


def _sqlstring(value: str | Sequence[str]) -> str:
    """The format registry's ``sqlstring``."""

    def one(v: str) -> str:
        return "'" + v.replace("'", "''").replace('"', '\\"') + "'"

    if isinstance(value, str):
        return one(value)
    return ",".join(one(v) for v in value)


def _csv(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else ",".join(value)


_FORMATS: dict[str, Callable[[str | Sequence[str]], str]] = {"sqlstring": _sqlstring, "csv": _csv}


def replace_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    """Step 1: the template service with the SQL datasource's formatter."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        variable = variables.get(name)
        if variable is None:
            return match.group(0)  # not a variable (a macro such as $__timeFilter): left alone
        if fmt is not None:
            formatter = _FORMATS.get(fmt)
            if formatter is None:
                raise InterpolationError(f"format {fmt!r} is not emulated")
            return formatter(variable.value)
        return _datasource_format(variable.value, variable)

    return _VARIABLE.sub(sub, sql)


def format_interval(interval: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit."""
    ms = interval // timedelta(milliseconds=1)
    for unit, size in (
        ("y", 365 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_interval(text: str) -> timedelta:
    """gtime.ParseInterval for the units a dashboard here uses (no months or years)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text.strip().strip("'"))
    if match is None:
        raise InterpolationError(f"error parsing interval {text}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _rfc3339(moment: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: fraction without trailing zeros, ``Z``."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += ("." + f"{utc.microsecond:06d}").rstrip("0")
    return text + "Z"


def _go_float(x: float) -> str:
    """Go's %v for a float64 (shortest representation)."""
    return str(int(x)) if x.is_integer() and abs(x) < 1e21 else repr(x)


def _macro(name: str, args: list[str], start: datetime, end: datetime, timescaledb: bool) -> str:
    if name in {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter"} and not args[0]:
        raise InterpolationError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
    if name == "__timeFrom":
        return f"'{_rfc3339(start)}'"
    if name == "__timeTo":
        return f"'{_rfc3339(end)}'"
    if name in {"__timeGroup", "__timeGroupAlias", "__unixEpochGroup", "__unixEpochGroupAlias"}:
        if len(args) < 2:
            raise InterpolationError(
                f"macro {name} needs time column and interval and optional fill value"
            )
        seconds = parse_interval(args[1]).total_seconds()
        if name.startswith("__unixEpoch"):
            group = f"floor(({args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"
        elif timescaledb:
            group = f"time_bucket('{seconds:.3f}s',{args[0]})"
        else:
            group = (
                f"floor(extract(epoch from {args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"
            )
        return group + ' AS "time"' if name.endswith("Alias") else group
    if name == "__unixEpochFilter":
        lo, hi = math.floor(start.timestamp()), math.floor(end.timestamp())
        return f"{args[0]} >= {lo} AND {args[0]} <= {hi}"
    raise InterpolationError(f"unknown macro {name!r}")


def interpolate(
    sql: str,
    variables: Mapping[str, Variable],
    start: datetime,
    end: datetime,
    interval: timedelta,
    *,
    timescaledb: bool = False,
) -> str:
    """The SQL Grafana sends to PostgreSQL for a panel over [start, end] at ``interval``."""
    scoped = {
        "__interval": Variable(format_interval(interval)),
        "__interval_ms": Variable(str(interval // timedelta(milliseconds=1))),
        **variables,
    }
    text = replace_variables(sql, scoped)
    text = text.replace("$__interval_ms", str(interval // timedelta(milliseconds=1)))
    text = text.replace("$__interval", format_interval(interval))
    text = text.replace("$__unixEpochFrom()", str(math.floor(start.timestamp())))
    text = text.replace("$__unixEpochTo()", str(math.floor(end.timestamp())))

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        # Pre-5.3 dashboards: "$__timeGroup(...)," meant the aliased form.
        if name == "__timeGroup" and text[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip() for a in match.group(2).split(",")]
        return _macro(name, args, start, end, timescaledb)

    return _MACRO.sub(sub, text)


# Grafana's rangeutil roundInterval steps, the interval a panel of ~1,000 points gets.
_STEPS = [
    timedelta(seconds=s)
    for s in (
        1,
        5,
        10,
        15,
        20,
        30,
        60,
        120,
        300,
        600,
        900,
        1200,
        1800,
        3600,
        7200,
        10800,
        21600,
        43200,
        86400,
        604800,
        2592000,
    )
]


def panel_interval(
    start: datetime, end: datetime, max_points: int = 1000, minimum: timedelta | None = None
) -> timedelta:
    """The range over ``max_points`` rounded up to a step, not below the datasource's minimum
    interval (``timeInterval``, 1m in the provisioning here)."""
    raw = (end - start) / max_points
    chosen = next((s for s in _STEPS if s >= raw), _STEPS[-1])
    return max(chosen, minimum) if minimum is not None else chosen
