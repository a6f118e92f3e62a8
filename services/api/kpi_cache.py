"""The API's cache of computed KPI answers: a small LRU, each answer good for :data:`CACHE_TTL_S`.

A dashboard's refreshes ask the same question again and again; ``routes/kpis.py`` computes an
answer over the rollups once and serves it from here, stating the bound in ``Cache-Control``. One
thread computes a missing answer while the others asking the same question wait for it, rather than
each running the same query. One cache per app (:func:`cache_of`), so two apps on two databases
never share answers.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from starlette.requests import Request

# How long an answer is served (the freshness bound the responses state), and how many are kept
# before the least recently used goes.
CACHE_TTL_S = 60.0
CACHE_ENTRIES = 512

T = TypeVar("T")


class AnswerCache(Generic[T]):
    """An LRU of answers keyed by the question, each fresh for ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, entries: int = CACHE_ENTRIES) -> None:
        self._ttl_s = ttl_s
        self._size = entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}

    def fresh(self, key: Hashable) -> T | None:
        """The answer to ``key`` if one was computed less than ``ttl_s`` ago."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or time.monotonic() - hit[0] >= self._ttl_s:
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


def cache_of(request: Request) -> AnswerCache[Any]:
    """The app's cache, made on first use (``app.state.kpi_cache``; a benchmark deletes it to
    time computed answers)."""
    state = request.app.state
    if not hasattr(state, "kpi_cache"):
        state.kpi_cache = AnswerCache()
    cache: AnswerCache[Any] = state.kpi_cache
    return cache
