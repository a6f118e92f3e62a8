"""Times on the command line and in scenario files: ISO 8601, or relative (``7d``, ``+2h30m``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
DAY = 86_400.0
# Thursday 1970-01-01 is day 0; +3 makes Monday weekday 0.
_EPOCH_WEEKDAY = 3
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_duration(text: str) -> float | None:
    """Seconds of ``1h30m``-style text (units s, m, h, d, w), or None when it is not one."""
    body = text.strip()
    if not body or _PART.sub("", body):
        return None
    return sum(float(n) * _SECONDS[u] for n, u in _PART.findall(body))


def to_epoch(value: datetime | date) -> float:
    """Seconds since the epoch; a naive datetime or a date is taken as UTC."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def parse_time(value: str | datetime | date, base: float, *, past: bool = False) -> float:
    """An absolute time in seconds since the epoch.

    ``+2h`` is ``base`` plus two hours, ``-2h`` minus; a bare ``2h`` is after ``base`` unless
    ``past`` (the command line's ``--backfill-from 7d`` means seven days ago). ``now`` is
    ``base``. Anything else must be ISO 8601 (UTC when no offset is given).
    """
    if not isinstance(value, str):
        return to_epoch(value)
    text = value.strip()
    if text == "now":
        return base
    sign = -1.0 if past else 1.0
    if text[:1] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    seconds = parse_duration(text)
    if seconds is not None:
        return base + sign * seconds
    try:
        return to_epoch(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(
            f"{value!r} is neither ISO 8601 nor a relative time like 7d or +2h"
        ) from None


@dataclass(frozen=True, slots=True)
class Clock:
    """Local time of the city: a fixed UTC offset (no daylight saving, so days are 24 h)."""

    utc_offset_s: float = 3600.0

    def local(self, t: float) -> float:
        return t + self.utc_offset_s

    def hour(self, t: float) -> float:
        return (self.local(t) % DAY) / 3600.0

    def day(self, t: float) -> int:
        return int(self.local(t) // DAY)

    def weekday(self, t: float) -> int:
        return (self.day(t) + _EPOCH_WEEKDAY) % 7

    def day_start(self, day: int) -> float:
        """UTC time of local midnight starting ``day``."""
        return day * DAY - self.utc_offset_s
