"""What a KPI computation receives and returns: the contract between the engine and the queries.

A computation is one function per KPI, ``compute(conn, query) -> list[KpiRow]``, that runs its
SQL over the rollups (and the registry) and returns, for every bucket of ``query``, one row per
district and one for the whole city (``district_id`` None). The engine turns those rows into
rated values; a computation never rates, caches or formats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

import psycopg
from psycopg.rows import TupleRow

# city_settings defaults: what a city that set nothing gets.
DEFAULT_PEAK_PERIODS: tuple[tuple[time, time], ...] = (
    (time(7, 0), time(9, 0)),
    (time(16, 0), time(19, 0)),
)


@dataclass(frozen=True, slots=True)
class CitySettings:
    """City-wide reference data (table ``city_settings``), with the defaults of ``KPIS.md``."""

    timezone: str = "UTC"
    # Weekday peak periods, local time (TRA-1).
    peak_periods: tuple[tuple[time, time], ...] = DEFAULT_PEAK_PERIODS
    # The grid's renewable fraction f_grid (ENE-3).
    grid_renewable_fraction: float = 0.0
    # Fill ratio at or above which a container overflows (WST-1).
    overflow_threshold: float = 1.0
    # Road classes counted as major roads (TRA-2).
    major_road_classes: tuple[str, ...] = ("major", "arterial", "motorway", "primary")
    # Minimum outage duration counted as a sustained interruption (ENE-1, ENE-2), seconds.
    sustained_outage_s: float = 300.0


@dataclass(frozen=True, slots=True)
class KpiQuery:
    """What to compute: consecutive half-open buckets [start, end), for some or all districts.

    ``buckets`` is never empty; a single-period value is one bucket. Times are timezone-aware.
    ``districts`` None means every district; the city row always covers the whole city.
    """

    buckets: Sequence[tuple[datetime, datetime]]
    districts: Sequence[str] | None = None
    settings: CitySettings = field(default_factory=CitySettings)

    @property
    def start(self) -> datetime:
        return self.buckets[0][0]

    @property
    def end(self) -> datetime:
        return self.buckets[-1][1]

    def bucket_arrays(self) -> tuple[list[datetime], list[datetime]]:
        """Starts and ends as two lists, for ``unnest(%s::timestamptz[], %s::timestamptz[])``."""
        return [b[0] for b in self.buckets], [b[1] for b in self.buckets]


@dataclass(frozen=True, slots=True)
class KpiRow:
    """One raw KPI value: a bucket, a district (None: the city), and what went into it.

    ``value`` is None when nothing could be computed (no data, zero denominator).
    ``sources_used`` / ``sources_expected``: sensors (or meters, stations, segments, containers)
    that contributed, of those the registry expects. ``completeness``: valid readings over
    expected readings, 0..1, when the KPI is built from readings at a nominal interval; None
    when sources_used / sources_expected is the whole story.
    """

    bucket: datetime
    district_id: str | None
    value: float | None
    sources_used: int
    sources_expected: int
    completeness: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


Computation = Callable[[psycopg.Connection[TupleRow], KpiQuery], list[KpiRow]]
