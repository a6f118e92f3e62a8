"""Alert rules: the typed model of a row of ``alert_rules``, its validation, loading and saving.

A rule watches one kind of subject (a sensor, a gateway, or a KPI's current value) for one
condition:

- ``above`` / ``below``: a sensor's value at or above (at or below) ``threshold``; once raised,
  the alert clears only when the value is strictly below (above) ``clear_threshold`` — the
  hysteresis band between the two neither raises nor clears;
- ``outside``: a value outside ``params.low`` .. ``params.high``; clears back inside
  ``params.clear_low`` .. ``params.clear_high`` (by default the same band);
- ``silent``: a sensor with no reading for ``params.intervals`` nominal intervals and at least
  ``params.min_silence_s``; a gateway whose ``last_seen`` is older than ``params.min_silence_s``;
- ``night_flow``: a DMA inflow meter whose minimum night flow (``params.start``..``params.end``,
  local time) of the last night is ``threshold`` times the median of the previous
  ``params.nights`` nights' minima or more (suspected leak); clears below ``clear_threshold`` times;
- ``kpi_band``: a row of ``kpi_current`` rated one of ``params.ratings`` (default ``missed``);
  for a period still running, only once the period's coverage rule is met
  (``params.wait_for_coverage``, on by default).

``duration_s`` is the minimum time a condition must hold before it raises an alert. A rule may be
scoped to one district. ``params`` is free JSON in the table, validated here per condition and
stored with its defaults filled in, so an operator reading the table sees every knob.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from enum import StrEnum
from typing import Annotated, Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.kinds import KINDS, QUANTITIES

from ..catalog import KPIS
from .errors import InvalidRule, RuleNotFound


class Subject(StrEnum):
    SENSOR = "sensor"
    GATEWAY = "gateway"
    KPI = "kpi"


class Condition(StrEnum):
    ABOVE = "above"
    BELOW = "below"
    OUTSIDE = "outside"
    SILENT = "silent"
    NIGHT_FLOW = "night_flow"
    KPI_BAND = "kpi_band"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueParams(_Params):
    """How an ``above``/``below``/``outside`` rule reads a sensor's value from ``readings_1m``."""

    # 0: the latest reading; > 0: the mean over this trailing window (e.g. WHO's 24-hour means).
    window_s: float = Field(default=0.0, ge=0.0, le=7 * 86400.0)
    # Window means only: the share of the readings expected at the sensor's nominal interval
    # that must be there, or no verdict (EU 2008/50/EC data capture is 75 %).
    min_coverage: float = Field(default=0.0, ge=0.0, le=1.0)
    # Latest reading only: how old it may be; default two nominal intervals, at least 5 minutes.
    max_age_s: float | None = Field(default=None, gt=0.0)
    # Compare value / a registry column of the sensor instead of the value (congestion is speed
    # relative to the segment's free-flow speed); sensors without that column are not watched.
    relative_to: Literal["free_flow_speed", "rated_max"] | None = None


class OutsideParams(ValueParams):
    low: float
    high: float
    clear_low: float | None = None
    clear_high: float | None = None


class SilentParams(_Params):
    # Sensors: silent after this many nominal reporting intervals without a reading...
    intervals: float = Field(default=3.0, gt=0.0)
    # ... and never sooner than this (gateways: the whole rule), seconds.
    min_silence_s: float = Field(default=900.0, ge=60.0)


class NightFlowParams(_Params):
    start: time = time(2, 0)
    end: time = time(4, 0)
    # Previous nights making up "the usual minimum", and how many must have data.
    nights: int = Field(default=7, ge=1, le=28)
    min_nights: int = Field(default=3, ge=1, le=28)
    # Minutes with data a night needs to count (out of 120 for 02:00-04:00).
    min_minutes: int = Field(default=60, ge=1)
    # Floor of the usual minimum, m3/s, so that a DMA whose nights are at zero can still raise.
    min_usual_flow: float = Field(default=1e-4, gt=0.0)


class KpiBandParams(_Params):
    ratings: tuple[Literal["missed", "warning"], ...] = Field(default=("missed",), min_length=1)
    # Only this period of kpi_current (e.g. "day"); None: every period.
    period: str | None = None
    # A period still running raises only once its coverage rule holds for the whole period: the
    # value's coverage times the share of the period (from the scope's first installation) that
    # has gone by reaches the KPI's threshold (KPIS.md: 75 %, 90 % for a year). Otherwise day 2
    # of a month, or a platform started this morning, would judge the month on a day.
    wait_for_coverage: bool = True


PARAMS: Mapping[Condition, type[_Params]] = {
    Condition.ABOVE: ValueParams,
    Condition.BELOW: ValueParams,
    Condition.OUTSIDE: OutsideParams,
    Condition.SILENT: SilentParams,
    Condition.NIGHT_FLOW: NightFlowParams,
    Condition.KPI_BAND: KpiBandParams,
}

_CONDITIONS: Mapping[Subject, frozenset[Condition]] = {
    Subject.SENSOR: frozenset(
        {
            Condition.ABOVE,
            Condition.BELOW,
            Condition.OUTSIDE,
            Condition.SILENT,
            Condition.NIGHT_FLOW,
        }
    ),
    Subject.GATEWAY: frozenset({Condition.SILENT}),
    Subject.KPI: frozenset({Condition.KPI_BAND}),
}
_THRESHOLDED = frozenset({Condition.ABOVE, Condition.BELOW, Condition.NIGHT_FLOW})

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class Rule(BaseModel):
    """One alert rule, as stored in ``alert_rules``; constructing one validates it whole."""

    model_config = ConfigDict(extra="forbid")

    id: RuleId
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    subject: Subject
    condition: Condition
    kind: str | None = None
    quantity: str | None = None
    kpi_id: str | None = None
    district_id: str | None = None
    threshold: float | None = None
    clear_threshold: float | None = None
    duration_s: float = Field(default=0.0, ge=0.0)
    severity: Severity = Severity.WARNING
    enabled: bool = True
    builtin: bool = False
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        problems = [*self._subject_problems(), *self._threshold_problems()]
        try:
            typed = PARAMS[self.condition].model_validate(self.params)
        except ValidationError as exc:
            problems.extend(f"params.{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        else:
            problems.extend(self._params_problems(typed))
            # Stored with the defaults filled in: the table shows every knob the rule has.
            self.params = typed.model_dump(mode="json", exclude_none=True)
        if problems:
            raise ValueError("; ".join(problems))
        if self.condition in _THRESHOLDED and self.clear_threshold is None:
            self.clear_threshold = self.threshold
        return self

    def _subject_problems(self) -> list[str]:
        problems = []
        if self.condition not in _CONDITIONS[self.subject]:
            allowed = ", ".join(sorted(_CONDITIONS[self.subject]))
            problems.append(
                f"condition {self.condition} does not apply to a {self.subject} "
                f"(a {self.subject} rule takes one of: {allowed})"
            )
        if self.kind is not None and self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not a sensor kind ({', '.join(KINDS)})")
        if self.quantity is not None and self.quantity not in QUANTITIES:
            problems.append(f"quantity {self.quantity!r} is not a known quantity")
        if (
            self.kind is not None
            and self.kind in KINDS
            and self.quantity in QUANTITIES
            and self.quantity not in KINDS[self.kind].quantities
        ):
            problems.append(f"a {self.kind} does not measure {self.quantity}")
        if self.kpi_id is not None and self.kpi_id not in KPIS:
            problems.append(f"kpi_id {self.kpi_id!r} is not in the KPI catalog")
        if self.subject is not Subject.SENSOR and (self.kind or self.quantity):
            problems.append(f"a {self.subject} rule names no kind or quantity")
        if self.subject is not Subject.KPI and self.kpi_id:
            problems.append("only a kpi rule names a kpi_id")
        valued = {Condition.ABOVE, Condition.BELOW, Condition.OUTSIDE, Condition.NIGHT_FLOW}
        if self.condition in valued and self.quantity is None:
            problems.append(f"a {self.condition} rule needs a quantity")
        if self.condition is Condition.NIGHT_FLOW and self.quantity not in (None, "flow"):
            problems.append("a night_flow rule watches the quantity flow")
        return problems

    def _threshold_problems(self) -> list[str]:
        t, c = self.threshold, self.clear_threshold
        if self.condition not in _THRESHOLDED:
            if t is not None or c is not None:
                where = "params low/high" if self.condition is Condition.OUTSIDE else "params"
                return [f"a {self.condition} rule takes no threshold (its limits are in {where})"]
            return []
        if t is None:
            return [f"a {self.condition} rule needs a threshold"]
        if c is None:
            return []
        if self.condition is Condition.BELOW and c < t:
            return [f"clear_threshold {c:g} must be at or above threshold {t:g} (hysteresis)"]
        if self.condition is not Condition.BELOW and c > t:
            return [f"clear_threshold {c:g} must be at or below threshold {t:g} (hysteresis)"]
        if self.condition is Condition.NIGHT_FLOW and t <= 0:
            return ["a night_flow threshold is a ratio to the usual minimum, above 0"]
        return []

    def _params_problems(self, typed: _Params) -> list[str]:
        if isinstance(typed, OutsideParams):
            low, high = typed.low, typed.high
            clear_low = low if typed.clear_low is None else typed.clear_low
            clear_high = high if typed.clear_high is None else typed.clear_high
            if not low < high:
                return [f"params: low {low:g} must be below high {high:g}"]
            if not low <= clear_low <= clear_high <= high:
                return ["params: need low <= clear_low <= clear_high <= high (hysteresis)"]
        if isinstance(typed, NightFlowParams):
            if typed.start >= typed.end:
                return ["params: the night window must not span midnight (start < end)"]
            if typed.min_nights > typed.nights:
                return ["params: min_nights must not exceed nights"]
        return []

    def typed_params(self) -> Any:
        """``params`` as the model of its condition (ValueParams, SilentParams...)."""
        return PARAMS[self.condition].model_validate(self.params)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "rule"


def parse_rule(data: Mapping[str, Any]) -> Rule:
    """Build a rule from a mapping (a table row, a TOML entry, a request body).

    Raises :class:`InvalidRule` listing every problem, one per line, each naming its field.
    """
    try:
        return Rule.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                problems.append(f"{_loc(error['loc'])}: {message}")
            else:
                problems.extend(message.split("; "))
        rule_id = data.get("id")
        raise InvalidRule(str(rule_id) if rule_id else None, problems) from None


_COLUMNS = (
    "id, name, description, subject, condition, kind, quantity, kpi_id, district_id, threshold, "
    "clear_threshold, duration_s, severity, enabled, builtin, params"
)


def load_rules(
    conn: psycopg.Connection[Any],
    *,
    enabled: bool | None = None,
    invalid: list[InvalidRule] | None = None,
) -> list[Rule]:
    """Every rule (or only the enabled/disabled ones), by id.

    A row edited into an inconsistent state behind the engine's back raises InvalidRule, or,
    when ``invalid`` is given, is left out and its error appended there (the evaluator keeps
    watching with the other rules rather than stopping on one bad row).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM alert_rules "  # noqa: S608 (a constant column list)
            "WHERE %(enabled)s::boolean IS NULL OR enabled = %(enabled)s ORDER BY id",
            {"enabled": enabled},
        ).fetchall()
    rules = []
    for row in rows:
        try:
            rules.append(parse_rule(row))
        except InvalidRule as exc:
            if invalid is None:
                raise
            invalid.append(exc)
    return rules


def get_rule(conn: psycopg.Connection[Any], rule_id: str) -> Rule:
    """The rule ``rule_id``; raises RuleNotFound."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM alert_rules WHERE id = %s",  # noqa: S608 (constant columns)
            (rule_id,),
        ).fetchone()
    if row is None:
        raise RuleNotFound(rule_id)
    return parse_rule(row)


def upsert_rule(conn: psycopg.Connection[Any], rule: Rule, *, overwrite: bool = True) -> bool:
    """Store ``rule``, replacing a rule of the same id when ``overwrite`` (else leaving it as it
    is). Returns True when the row was written. Atomic; a savepoint in the caller's transaction
    if one is open, else its own committed transaction.

    Raises InvalidRule when the district does not exist.
    """
    values = rule.model_dump(mode="json")
    values["params"] = Jsonb(values["params"])
    names = _COLUMNS.split(", ")
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "id")
    conflict = f"DO UPDATE SET {updates}, updated_at = now()" if overwrite else "DO NOTHING"
    statement = (
        f"INSERT INTO alert_rules ({_COLUMNS}) "  # noqa: S608 (constant names only)
        f"VALUES ({', '.join(f'%({n})s' for n in names)}) ON CONFLICT (id) {conflict}"
    )
    try:
        with conn.transaction():
            cur = conn.execute(statement, values)
    except psycopg.errors.ForeignKeyViolation:
        raise InvalidRule(rule.id, [f"district_id: no district {rule.district_id!r}"]) from None
    return cur.rowcount == 1


def set_enabled(conn: psycopg.Connection[Any], rule_id: str, enabled: bool) -> None:
    """Enable or disable a rule (a disabled rule's open alerts clear at the next evaluation)."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE alert_rules SET enabled = %s, updated_at = now() WHERE id = %s",
            (enabled, rule_id),
        )
    if cur.rowcount == 0:
        raise RuleNotFound(rule_id)
