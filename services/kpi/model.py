"""What a KPI computation receives and returns: the contract between the engine and the queries.

A computation is one function per KPI, ``compute(conn, query) -> list[KpiRow]``, that runs its
SQL over the rollups (and the registry) and returns, for every bucket of ``query``, one row per
district and one for the whole city (``district_id`` None). The engine turns those rows into
rated values; a computation never rates, caches or formats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

# One definition, with the settings it types (the data layer's): re-exported for the queries.
from services.storage.city_settings import CitySettings

__all__ = ["CitySettings", "Computation", "KpiQuery", "KpiRow"]


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
