"""Periods and buckets on the city's calendar: pure arithmetic over timezone-aware datetimes.

A period (hour, day, ISO week, month, year) is read on the wall clock of the city's timezone and
returned as UTC datetimes, half-open [start, end). Hours are absolute: a DST change makes a local
hour repeat or vanish, never last two hours.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidPeriod, PeriodArgument

GRAINS = ("hour", "day", "week", "month", "year")
# A time series longer than this is a mistake (a year of hours is 8784).
MAX_BUCKETS = 10_000


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidPeriod(f"unknown timezone {tz!r}") from None


def _aware(moment: datetime, what: PeriodArgument) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidPeriod(f"{what} must carry a timezone ({moment.isoformat()})", what)
    return moment.astimezone(UTC)


def _floor(moment: datetime, grain: str, zone: ZoneInfo) -> datetime:
    """The start of the ``grain`` period (wall clock of ``zone``) containing ``moment``, in UTC."""
    local = moment.astimezone(zone)
    if grain == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
        return start.astimezone(UTC)
    day = local.date()
    if grain == "week":
        day -= timedelta(days=day.weekday())  # ISO 8601 weeks start on Monday
    elif grain == "month":
        day = day.replace(day=1)
    elif grain == "year":
        day = day.replace(month=1, day=1)
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def _next(start: datetime, grain: str, zone: ZoneInfo) -> datetime:
    """The start of the ``grain`` period after the one starting at ``start`` (UTC)."""
    if grain == "hour":
        # Absolute hours: a DST change makes a local hour repeat or vanish, never 2 h long.
        return start + timedelta(hours=1)
    day = start.astimezone(zone).date()
    if grain == "day":
        day += timedelta(days=1)
    elif grain == "week":
        day += timedelta(days=7)
    elif grain == "month":
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    else:
        day = date(day.year + 1, 1, 1)
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def period_bounds(period: str, at: datetime, tz: str = "UTC") -> tuple[datetime, datetime]:
    """The hour, day, week (ISO, from Monday), month or year containing ``at``, on the wall clock
    of ``tz``, as UTC datetimes [start, end)."""
    if period not in GRAINS:
        raise InvalidPeriod(f"period {period!r} is not one of {', '.join(GRAINS)}", "period")
    zone = _zone(tz)
    try:
        start = _floor(_aware(at, "at"), period, zone)
        return start, _next(start, period, zone)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, InvalidPeriod):
            raise
        raise InvalidPeriod(f"the {period} around {at.isoformat()} is out of range", "at") from None


def buckets(
    start: datetime, end: datetime, grain: str | None, tz: str = "UTC"
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at the ``grain`` boundaries of ``tz``'s calendar (None: one bucket); the
    first and last buckets are clipped to the period when it is not aligned."""
    start, end = _aware(start, "start"), _aware(end, "end")
    if end <= start:
        raise InvalidPeriod(f"end {end.isoformat()} is not after start {start.isoformat()}", "end")
    if grain is None:
        return [(start, end)]
    if grain not in GRAINS:
        raise InvalidPeriod(f"grain {grain!r} is not one of {', '.join(GRAINS)}", "grain")
    zone = _zone(tz)
    result: list[tuple[datetime, datetime]] = []
    lower = start
    try:
        boundary = _next(_floor(start, grain, zone), grain, zone)
        while lower < end:
            upper = min(boundary, end)
            result.append((lower, upper))
            if len(result) > MAX_BUCKETS:
                raise InvalidPeriod(
                    f"more than {MAX_BUCKETS} {grain} buckets; choose a coarser grain", "grain"
                )
            lower, boundary = upper, _next(boundary, grain, zone)
    except (OverflowError, ValueError) as exc:
        # Calendar arithmetic past year 9999 or before year 1: the caller's range, not a bug.
        if isinstance(exc, InvalidPeriod):
            raise
        raise InvalidPeriod(
            f"{grain} buckets of this range run out of the calendar", "grain"
        ) from None
    return result
