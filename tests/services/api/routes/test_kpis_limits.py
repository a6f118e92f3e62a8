"""The series limit of /v1/kpis counts buckets without making them (``kpis.series_length``): the
count must be the one ``engine.buckets`` makes on UTC's calendar, whatever the bounds (their
offsets, off the hour, on a boundary, across a year, before the epoch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from services.api.routes.kpis import series_length
from services.kpi import engine

_moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_spans = st.one_of(
    st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3)),
    st.integers(min_value=1, max_value=400).map(lambda days: timedelta(days=days)),
    st.integers(min_value=1, max_value=40).map(lambda hours: timedelta(hours=hours)),
)


@given(
    start=_moments,
    span=_spans,
    offset=_offsets,
    grain=st.sampled_from(["hour", "day", "week", "month", "year"]),
)
def test_series_length_is_the_engines_bucket_count(
    start: datetime, span: timedelta, offset: timezone, grain: str
) -> None:
    if grain in ("hour", "day"):
        span = min(span, timedelta(days=60))  # keeps the engine's list short
    end = start + span
    count = series_length(start.astimezone(offset), end.astimezone(offset), grain)
    assert count == len(engine.buckets(start, end, grain, "UTC"))


def test_series_length_counts_boundaries_exactly() -> None:
    monday = datetime(2026, 3, 2, tzinfo=UTC)
    assert series_length(monday, monday + timedelta(days=7), "week") == 1
    assert series_length(monday, monday + timedelta(days=7, microseconds=1), "week") == 2
    assert series_length(monday - timedelta(microseconds=1), monday, "week") == 1
    new_year = datetime(2026, 1, 1, tzinfo=UTC)
    assert series_length(new_year - timedelta(hours=1), new_year + timedelta(hours=1), "year") == 2
    assert series_length(new_year, new_year + timedelta(days=365), "month") == 12
    assert series_length(new_year, new_year + timedelta(days=365, seconds=30), "hour") == 8761


def test_off_the_calendar_has_no_length() -> None:
    late = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    assert series_length(late, late + timedelta(minutes=30), "day") is None
