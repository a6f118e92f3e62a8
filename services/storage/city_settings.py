"""City settings and their district overrides: what they are, their units, and how they are set.

The KPIs read a few city-wide values (``KPIS.md``): the city's timezone, the weekday peak
periods (TRA-1), the overflow threshold (WST-1), the major road classes (TRA-2), the shortest
sustained interruption (ENE-1, ENE-2) and the grid's renewable fraction (ENE-3). City values live
in the table ``city_settings`` (one JSON value per name); where ``KPIS.md`` says "(registry)", a
district may override the city's value in its ``reference`` data under the same name (peak
periods, overflow threshold, renewable fraction), and the KPI queries use the district's value
for that district's sensors (the city figure aggregates each sensor judged by its own district's
value).

Every value goes through :func:`parse` whoever sets it (CLI, API, manifest): a number with a
unit is given as in ``services.storage.measures`` (``"5 min"``, ``"95 %"``) and stored in the
canonical unit; an implausible value is refused with the reason. Values are stored canonical, so
the engine reads them without parsing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time
from functools import partial
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from gateway.kinds import Bounds

from .errors import StorageError
from .measures import Attribute, measure

# Peak windows add up to at most half a day: more is not a peak (and TRA-1 would be an all-day
# index under the name of a peak one).
MAX_PEAK_HOURS = 12
MAX_ROAD_CLASSES = 32


class SettingError(StorageError, ValueError):
    """A setting was refused: ``name`` is the setting, the message says why (the API answers
    a 422 naming ``body.value``)."""

    status = 422

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name

    @property
    def request_field(self) -> str | None:
        return "body.value"

    @property
    def detail(self) -> str:
        return f"{self.name}: {self}"


class UnknownSettingError(SettingError):
    """No setting has this name (the API answers 404)."""

    status = 404

    @property
    def request_field(self) -> str | None:
        return None

    @property
    def detail(self) -> str:
        return f"no setting {self.name!r}; one of {', '.join(SETTINGS)}"


class CitySettingError(SettingError):
    """The setting is the city's alone: a district does not override it (the API answers a 422
    naming the path's setting)."""

    @property
    def request_field(self) -> str | None:
        return "path.name"

    @property
    def detail(self) -> str:
        return str(self)


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    description: str
    # The canonical unit the value is stored in ("" when it has none).
    unit: str
    # The value a city that set nothing gets (canonical, as stored).
    default: Any
    # A district may override it (KPIS.md "(registry)").
    district: bool
    # Raw value (JSON or a command-line string) -> canonical JSON value; ValueError if refused.
    parse: Callable[[Any], Any]
    # How to write it on a command line.
    example: str


def _ratio(name: str, low: float, high: float, plausible: str) -> Attribute:
    return Attribute(name, "/", MappingProxyType({"%": 0.01}), Bounds(low, high), plausible)


def _timezone(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("an IANA time zone name, e.g. Europe/Rome")
    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{raw!r} is not a known IANA time zone (e.g. Europe/Rome)") from None
    return raw.strip()


def _clock(raw: Any) -> time:
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a time of day (HH:MM)")
    try:
        moment = time.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a time of day (HH:MM)") from None
    if moment.tzinfo is not None:
        raise ValueError(f"{raw!r}: peak periods are local times, without an offset")
    return moment


def _minutes(moment: time) -> float:
    return moment.hour * 60 + moment.minute + moment.second / 60 + moment.microsecond / 6e7


def _peak_periods(raw: Any) -> list[list[str]]:
    """``[["07:00", "09:00"], ...]`` or ``"07:00-09:00,16:00-19:00"``; a window whose end is
    not after its start runs past midnight. Windows may not overlap (a minute would count twice)."""
    if isinstance(raw, str):
        pairs: Any = [part.split("-") for part in raw.split(",") if part.strip()]
    else:
        pairs = raw
    if not isinstance(pairs, list) or not pairs:
        raise ValueError('one or more windows, e.g. "07:00-09:00,16:00-19:00"')
    windows: list[tuple[time, time]] = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"{pair!r} is not a window start-end (HH:MM-HH:MM)")
        start, end = _clock(pair[0]), _clock(pair[1])
        if start == end:
            raise ValueError(f"the window {pair[0]}-{pair[1]} is empty")
        windows.append((start, end))
    # Minutes of the day covered, a window past midnight split in two.
    spans: list[tuple[float, float]] = []
    for start, end in windows:
        a, b = _minutes(start), _minutes(end)
        spans.extend([(a, b)] if b > a else [(a, 1440.0), (0.0, b)])
    spans.sort()
    for (_, end_a), (start_b, _) in itertools.pairwise(spans):
        if start_b < end_a:
            raise ValueError("peak windows overlap; a minute would count twice")
    total_h = sum(b - a for a, b in spans) / 60
    if total_h > MAX_PEAK_HOURS:
        raise ValueError(
            f"the windows cover {total_h:g} h a day; peak periods cover at most {MAX_PEAK_HOURS} h"
        )
    return [[_shown(start), _shown(end)] for start, end in windows]


def _shown(moment: time) -> str:
    return moment.isoformat(timespec="minutes" if not moment.second else "seconds")


def _road_classes(raw: Any) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError('road class names, e.g. "major,arterial" or ["major", "arterial"]')
    names = list(dict.fromkeys(i.strip() for i in items if i.strip()))
    if not names:
        raise ValueError("at least one road class (TRA-2 would have no major road)")
    if len(names) > MAX_ROAD_CLASSES or any(len(n) > 64 for n in names):
        raise ValueError(f"at most {MAX_ROAD_CLASSES} road classes of at most 64 characters")
    return names


_LIST: tuple[Setting, ...] = (
    Setting(
        "timezone",
        "the city's wall clock: local days, weeks and months of every KPI",
        "",
        "UTC",
        False,
        _timezone,
        "Europe/Rome",
    ),
    Setting(
        "peak_periods",
        "weekday peak windows, local time (TRA-1)",
        "HH:MM",
        [["07:00", "09:00"], ["16:00", "19:00"]],
        True,
        _peak_periods,
        "07:00-09:30,16:00-18:30",
    ),
    Setting(
        "overflow_threshold",
        "fill ratio at or above which a container overflows (WST-1)",
        "/",
        1.0,
        True,
        partial(
            measure, attribute=_ratio("overflow_threshold", 0.5, 1.2, "0.5 to 1.2 (50 to 120 %)")
        ),
        "95 %",
    ),
    Setting(
        "major_road_classes",
        "road classes counted as major roads (TRA-2)",
        "",
        ["major", "arterial", "motorway", "primary"],
        False,
        _road_classes,
        "major,arterial",
    ),
    Setting(
        "sustained_outage_s",
        "shortest interruption counted as sustained (ENE-1, ENE-2; IEEE 1366: 5 min)",
        "s",
        300.0,
        False,
        partial(
            measure,
            attribute=Attribute(
                "sustained_outage_s",
                "s",
                MappingProxyType({"min": 60.0, "h": 3600.0}),
                Bounds(60.0, 3600.0),
                "1 min to 1 h",
            ),
        ),
        "5 min",
    ),
    Setting(
        "grid_renewable_fraction",
        "renewable fraction of the grid's electricity, f_grid (ENE-3)",
        "/",
        0.0,
        True,
        partial(
            measure, attribute=_ratio("grid_renewable_fraction", 0.0, 1.0, "0 to 1 (0 to 100 %)")
        ),
        "30 %",
    ),
)

SETTINGS: Mapping[str, Setting] = MappingProxyType({s.name: s for s in _LIST})
DISTRICT_SETTINGS = tuple(s.name for s in _LIST if s.district)


def _peak_times(value: Any) -> tuple[tuple[time, time], ...]:
    return tuple((time.fromisoformat(a), time.fromisoformat(b)) for a, b in value)


@dataclass(frozen=True, slots=True)
class CitySettings:
    """The city's settings in effect, typed as the KPI queries read them; the defaults are the
    settings' own (above), so that a city that set nothing gets the values of ``KPIS.md``."""

    timezone: str = SETTINGS["timezone"].default
    # Weekday peak periods, local time (TRA-1).
    peak_periods: tuple[tuple[time, time], ...] = _peak_times(SETTINGS["peak_periods"].default)
    # The grid's renewable fraction f_grid (ENE-3).
    grid_renewable_fraction: float = SETTINGS["grid_renewable_fraction"].default
    # Fill ratio at or above which a container overflows (WST-1).
    overflow_threshold: float = SETTINGS["overflow_threshold"].default
    # Road classes counted as major roads (TRA-2).
    major_road_classes: tuple[str, ...] = tuple(SETTINGS["major_road_classes"].default)
    # Minimum outage duration counted as a sustained interruption (ENE-1, ENE-2), seconds.
    sustained_outage_s: float = SETTINGS["sustained_outage_s"].default


def setting(name: str, *, district: bool = False) -> Setting:
    """The setting called ``name``; UnknownSettingError when unknown, CitySettingError when
    ``district`` and a district does not override it."""
    found = SETTINGS.get(name)
    if found is None:
        raise UnknownSettingError(name, f"unknown setting; one of {', '.join(SETTINGS)}")
    if district and not found.district:
        raise CitySettingError(
            name,
            f"{name} is a city setting (set it for the city); a district overrides only "
            f"{', '.join(DISTRICT_SETTINGS)}",
        )
    return found


def parse(name: str, raw: Any, *, district: bool = False) -> Any:
    """``raw`` as the canonical value of setting ``name``; SettingError saying why not."""
    found = setting(name, district=district)
    if raw is None:
        raise SettingError(name, "a value is needed (unset the setting to get the default)")
    try:
        return found.parse(raw)
    except ValueError as exc:
        raise SettingError(name, str(exc)) from None


def check_reference(reference: Mapping[str, Any]) -> dict[str, Any]:
    """A district's reference data with its setting overrides parsed (canonical); ValueError
    naming every bad entry. Other keys (DMAs, feeders, ...) pass unchanged."""
    checked = dict(reference)
    problems: list[str] = []
    for key, raw in reference.items():
        if key not in SETTINGS:
            continue
        try:
            checked[key] = parse(key, raw, district=True)
        except SettingError as exc:
            problems.append(f"{key}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return checked


# --- storage -----------------------------------------------------------------------------------

Conn = psycopg.Connection[TupleRow]


@dataclass(frozen=True, slots=True)
class Value:
    """A setting's value in effect for a scope and where it comes from."""

    name: str
    value: Any
    source: Literal["default", "city", "district"]


def city_values(conn: Conn) -> list[Value]:
    """Every city setting in effect: the stored value, else the default."""
    stored: dict[Any, Any] = {
        name: value for name, value in conn.execute("SELECT name, value FROM city_settings")
    }
    return [
        Value(s.name, stored[s.name], "city")
        if s.name in stored
        else Value(s.name, s.default, "default")
        for s in _LIST
    ]


def load_settings(conn: Conn) -> CitySettings:
    """The city settings in effect (each stored value, else its default), typed."""
    values = {v.name: v.value for v in city_values(conn)}
    return CitySettings(
        timezone=str(values["timezone"]),
        peak_periods=_peak_times(values["peak_periods"] or SETTINGS["peak_periods"].default),
        grid_renewable_fraction=float(values["grid_renewable_fraction"]),
        overflow_threshold=float(values["overflow_threshold"]),
        major_road_classes=tuple(values["major_road_classes"]),
        sustained_outage_s=float(values["sustained_outage_s"]),
    )


def set_city(conn: Conn, name: str, raw: Any) -> Value:
    """Store a city setting (the caller commits)."""
    value = parse(name, raw)
    conn.execute(
        "INSERT INTO city_settings (name, value) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()",
        (name, Jsonb(value)),
    )
    return Value(name, value, "city")


def unset_city(conn: Conn, name: str) -> Value:
    """Back to the default (the caller commits)."""
    found = setting(name)
    conn.execute("DELETE FROM city_settings WHERE name = %s", (name,))
    return Value(name, found.default, "default")


class UnknownDistrictError(StorageError, LookupError):
    """No district has this id (its only argument, so ``str()`` is the id; the API answers 404)."""

    status = 404

    @property
    def detail(self) -> str:
        return f"no district {self.args[0]!r}"


def _reference(conn: Conn, district_id: str, *, lock: bool = False) -> dict[str, Any]:
    statement = (
        "SELECT reference FROM districts WHERE id = %s FOR UPDATE"
        if lock
        else "SELECT reference FROM districts WHERE id = %s"
    )
    row = conn.execute(statement, (district_id,)).fetchone()
    if row is None:
        raise UnknownDistrictError(district_id)
    reference: dict[str, Any] = dict(row[0] or {})
    return reference


def district_values(conn: Conn, district_id: str) -> list[Value]:
    """The settings a district overrides (its own value, else the city's) in effect for it."""
    reference = _reference(conn, district_id)
    city = {v.name: v for v in city_values(conn)}
    return [
        Value(name, reference[name], "district") if name in reference else city[name]
        for name in DISTRICT_SETTINGS
    ]


def set_district(conn: Conn, district_id: str, name: str, raw: Any) -> Value:
    """Override a setting for one district (the caller commits)."""
    # The name, then the district, then the value: each refusal is about what the next one
    # depends on, so the first is the one to report.
    setting(name, district=True)
    reference = _reference(conn, district_id, lock=True)
    reference[name] = value = parse(name, raw, district=True)
    conn.execute(
        "UPDATE districts SET reference = %s WHERE id = %s", (Jsonb(reference), district_id)
    )
    return Value(name, value, "district")


def unset_district(conn: Conn, district_id: str, name: str) -> Value:
    """Drop a district's override: the city's value applies again (the caller commits)."""
    setting(name, district=True)
    reference = _reference(conn, district_id, lock=True)
    reference.pop(name, None)
    conn.execute(
        "UPDATE districts SET reference = %s WHERE id = %s", (Jsonb(reference), district_id)
    )
    return next(v for v in city_values(conn) if v.name == name)
