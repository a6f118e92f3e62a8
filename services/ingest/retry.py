"""The worker's one retry policy for database work: try again while the database is away.

Exponential backoff with jitter, the gateway's own (``gateway.publisher.backoff_delay``): the
first retry after ``initial_s``, then uniform between ``initial_s`` and ``initial_s * 2**n``, at
most ``maximum_s``. Workers cut off together then do not come back in step, and a database back
within seconds is written to within seconds. Waiting holds the broker off (nothing is
acknowledged meanwhile), so there is no limit on attempts: only a stop ends it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple

import psycopg

from gateway.publisher import backoff_delay

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class StoppedError(Exception):  # control flow: never escapes the worker's run()
    """A stop was asked for while the database was away: leave the batch unacknowledged."""


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    maximum_s: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry ``attempt`` (0 for the first)."""
        return backoff_delay(attempt, self.initial_s, self.maximum_s, rng)


def retry(
    action: Callable[[*Ts], T],
    *args: *Ts,
    stop: threading.Event,
    what: str,
    on_error: Callable[[psycopg.OperationalError], None] = lambda _exc: None,
    recover: Callable[[], None] = lambda: None,
    backoff: Backoff = Backoff(),
    rng: random.Random | None = None,
) -> T:
    """Run ``action(*args)`` until it does not raise ``psycopg.OperationalError`` (the database
    being away); between attempts call ``on_error`` (counting), wait, then ``recover``.
    Raise :class:`StoppedError` when ``stop`` is set during a wait. Other errors propagate."""
    attempt = 0
    while True:
        try:
            return action(*args)
        except psycopg.OperationalError as exc:
            on_error(exc)
            # Made here, not up front: seeding reads the OS's entropy, and the worker calls this
            # for every message while nothing fails.
            rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
            delay = backoff.delay(attempt, rng)
            attempt += 1
            log.warning("%s, retrying in %.1fs: %s", what, delay, exc)
            if stop.wait(delay):
                raise StoppedError from None
            recover()
