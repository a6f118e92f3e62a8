"""The simulated city's backfill plan: a week of whole local days, today first, newest first; its
watcher reports a part once the platform's receipts took its packs out of the outboxes."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from gateway.outbox import Outbox
from services.devstack import city
from services.devstack.city import HISTORY_DAYS, _Watcher, backfill_plan, history_start

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


def test_the_watcher_reports_a_part_once_every_pack_put_before_it_is_receipted(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refreshes: list[str] = []
    refresh = city.rollups.refresh

    def counted(conn: Any, mode: str) -> Any:
        refreshes.append(mode)
        return refresh(conn, mode)

    monkeypatch.setattr(city.rollups, "refresh", counted)
    outboxes = {gateway: Outbox(tmp_path / f"{gateway}.sqlite") for gateway in ("gw-a", "gw-b")}
    ready: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    watcher = _Watcher(database_url, outboxes, ready.put, stop)
    watcher.thread.start()
    try:
        for outbox in outboxes.values():
            outbox.put("up", b"1")
            outbox.put("up", b"2")
        watcher.expect("today")
        outboxes["gw-b"].put("up", b"live")  # after the part: not waited for
        # A receipt says stored, whatever ingestion made of each reading.
        outboxes["gw-a"].delete_range(1, 2)
        outboxes["gw-b"].delete_range(1, 1)
        with pytest.raises(queue.Empty):
            ready.get(timeout=1.0)
        assert refreshes == []
        outboxes["gw-b"].delete_range(2, 2)
        assert ready.get(timeout=10) == "today"
        assert len(refreshes) == 1
        # Stopped before the history is stored: neither reported nor refreshed (the database
        # may be on its way down).
        outboxes["gw-a"].put("up", b"3")
        watcher.expect("history")
        stop.set()
        watcher.thread.join(10)
        assert not watcher.thread.is_alive()
        assert ready.empty()
        assert len(refreshes) == 1
    finally:
        stop.set()
        for outbox in outboxes.values():
            outbox.close()
