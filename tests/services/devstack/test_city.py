"""The simulated city's backfill plan: a week of whole local days, today first, newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from services.devstack.city import HISTORY_DAYS, backfill_plan, history_start

DAY = 86400.0


def test_the_backfill_covers_seven_whole_days_before_today_today_first() -> None:
    now = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    begins = history_start(now, "UTC")
    assert HISTORY_DAYS >= 7
    assert begins == datetime(2026, 11, 28, tzinfo=UTC)  # yesterday and the 6 days before, whole
    today = datetime(2026, 12, 5, tzinfo=UTC).timestamp()
    first, older = backfill_plan(now.timestamp(), today, begins.timestamp())
    assert first == (today, now.timestamp())  # today first: the live KPIs need it
    assert len(older) == 7
    # Newest first, contiguous, down to the history's start: nothing left out, nothing twice.
    assert older[0][1] == today
    assert all(a[0] == b[1] for a, b in pairwise(older))
    assert older[-1][0] == begins.timestamp()
    assert all(hi - lo == DAY for lo, hi in older)


def test_the_history_starts_at_the_citys_local_midnight() -> None:
    # Brussels in winter is UTC+1: its midnight is 23:00 UTC the evening before.
    now = datetime(2026, 12, 5, 0, 30, tzinfo=UTC)  # 01:30 local, already Dec 5 there
    begins = history_start(now, "Europe/Brussels")
    assert begins == datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    assert now - begins > timedelta(days=7)
