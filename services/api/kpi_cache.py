"""The API's cache of computed KPI answers: a small LRU, each answer good for a while.

A dashboard's refreshes ask the same question again and again; ``routes/kpis.py`` computes an
answer over the rollups once and serves it from here, stating the bound in ``Cache-Control``. One
thread computes a missing answer while the others asking the same question wait for it, rather than
each running the same query. One cache per app (:func:`cache_of`), so two apps on two databases
never share answers; its bounds are settings (``URBANPULSE_API_KPI_CACHE_TTL``,
``URBANPULSE_API_KPI_CACHE_ENTRIES``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from starlette.requests import Request

from services.settings import ApiSettings, Settings

T = TypeVar("T")


class AnswerCache(Generic[T]):
    """An LRU of answers keyed by the question, each fresh for ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float, entries: int) -> None:
        self.ttl_s = ttl_s
        self._size = entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}

    def fresh(self, key: Hashable) -> T | None:
        """The answer to ``key`` if one was computed less than ``ttl_s`` ago."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or time.monotonic() - hit[0] >= self.ttl_s:
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The fresh answer, or one computed now (once, however many threads ask at once)."""
        answer = self.fresh(key)
        if answer is not None:
            return answer
        with self._lock:
            flight = self._computing.setdefault(key, threading.Lock())
        try:
            with flight:
                answer = self.fresh(key)
                if answer is None:
                    computed_at = time.monotonic()
                    answer = compute()
                    with self._lock:
                        self._entries[key] = (computed_at, answer)
                        self._entries.move_to_end(key)
                        while len(self._entries) > self._size:
                            self._entries.popitem(last=False)
        finally:
            with self._lock:
                self._computing.pop(key, None)
        return answer


def for_settings(settings: Settings) -> AnswerCache[Any]:
    """A cache bounded by ``URBANPULSE_API_KPI_CACHE_TTL`` and ``_ENTRIES``."""
    tuning = ApiSettings.of(settings)
    return AnswerCache(tuning.kpi_cache_ttl_s, tuning.kpi_cache_entries)


def cache_of(request: Request) -> AnswerCache[Any]:
    """The app's cache (``app.state.kpi_cache``, made by ``create_app``; made again from the
    app's settings if deleted, as a benchmark does to time computed answers)."""
    state = request.app.state
    if not hasattr(state, "kpi_cache"):
        state.kpi_cache = for_settings(state.settings)
    cache: AnswerCache[Any] = state.kpi_cache
    return cache
