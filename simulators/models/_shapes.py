"""Shared shapes of the models: deterministic noise, diurnal curves, local time, weather.

Every model is a pure function of (sensor, time, scenario): noise comes from a hash of the
sensor's key and the timestamp, never from a stream of draws, so a value does not depend on
where a run started or how it was batched, and a backfill and a live run agree on every
timestamp they share. Cumulative registers are closed-form integrals of the same curves, so an
index never goes backwards between two runs either.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from simulators.timespec import DAY, Clock

_MASK = (1 << 64) - 1


def stable_key(*parts: object) -> int:
    """A 64-bit key from text, stable across processes (``hash()`` of a str is salted)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def bits(key: int, t: float) -> int:
    """64 well-mixed bits for (key, t): the splitmix64 finaliser over both."""
    x = (key ^ (int(t) * 0x9E3779B97F4A7C15)) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(b: int, slot: int) -> float:
    """A uniform in [0, 1) from 16 bits of ``b`` (slots 0-3)."""
    return ((b >> (16 * slot)) & 0xFFFF) / 65_536.0


def noise(b: int, slot: int) -> float:
    """Zero-mean, unit-variance, bounded (±2.45) noise from two 16-bit slots (0-2).

    Triangular rather than Gaussian on purpose: bounded noise can never push a value out of
    its kind's plausible range, which only faults may do.
    """
    return (uniform(b, slot) + uniform(b, slot + 1) - 1.0) * 2.449489742783178


@dataclass(frozen=True, slots=True)
class Diurnal:
    """A daily curve of mean 1: ``1 + a1 cos(w(h - p1)) + a2 cos(2w(h - p2))``, h local hours.

    Two harmonics give the two daily peaks of water and electricity demand and a night
    minimum; with ``a1 + a2 < 1`` it never reaches zero, so its integral (a cumulative
    register) strictly increases.
    """

    a1: float
    p1: float
    a2: float
    p2: float

    def value(self, local_s: float) -> float:
        h = local_s / 3600.0
        return (
            1.0
            + self.a1 * math.cos(2 * math.pi * (h - self.p1) / 24.0)
            + self.a2 * math.cos(4 * math.pi * (h - self.p2) / 24.0)
        )

    def integral(self, local_s: float) -> float:
        """Antiderivative in seconds: d/dt integral(t) == value(t)."""
        w1 = 2 * math.pi / DAY
        w2 = 2 * w1
        return (
            local_s
            + self.a1 * math.sin(w1 * (local_s - self.p1 * 3600.0)) / w1
            + self.a2 * math.sin(w2 * (local_s - self.p2 * 3600.0)) / w2
        )


def ambient_temperature(clock: Clock, t: float) -> float:
    """Air temperature, Cel: seasonal (cold in January) plus diurnal (warm at 15:00)."""
    day_of_year = (clock.day(t) % 365.2425) / 365.2425
    seasonal = 11.0 - 8.0 * math.cos(2 * math.pi * (day_of_year - 0.03))
    diurnal = 4.0 * math.cos(2 * math.pi * (clock.hour(t) - 15.0) / 24.0)
    return seasonal + diurnal


def day_length_h(day: int) -> float:
    """Hours of daylight at about 50° N: 8 h at the winter solstice, 16 h at the summer one."""
    day_of_year = (day % 365.2425) - 80.0  # 0 near the March equinox
    return 12.0 + 4.0 * math.sin(2 * math.pi * day_of_year / 365.2425)


def cloudiness(weather_key: int, day: int) -> float:
    """The day's clear-sky fraction for the whole city (weather is city-wide), 0.15-1.0."""
    return 0.15 + 0.85 * float(uniform(bits(weather_key, day), 0) ** 0.6)


__all__ = [
    "DAY",
    "Clock",
    "Diurnal",
    "ambient_temperature",
    "bits",
    "cloudiness",
    "day_length_h",
    "noise",
    "stable_key",
    "uniform",
]
