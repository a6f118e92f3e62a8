"""Retention policies as values: which policy a series falls under, and what a policy may say.

Pure (no database): ``services.storage.retention`` stores the policies and applies them.

A policy names a selector, ``default``, a ``domain``, a sensor ``kind`` or a ``quantity``, and
says how many days raw readings are kept and how many years each rollup grain is (None: for
ever). A series (a sensor's quantity) falls under the most specific policy that names it:
quantity, then kind, then domain, then the default. Rollups are never kept shorter than the
raw readings they summarise, and a coarser grain never shorter than a finer one: erasure
recomputes a coarser bucket from the finer one, which must still be there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.kinds import KINDS, QUANTITIES, Domain

from .errors import FieldError

SCOPES = ("quantity", "kind", "domain", "default")  # most specific first
LEVELS = ("1m", "1h", "1d")
DAYS_PER_YEAR = 365
# Bounds of what a policy may say: a day of raw readings at least (the rollup refresh needs the
# newest minutes raw), and nothing past what a timestamp arithmetic can carry comfortably.
MAX_RAW_DAYS = 100 * DAYS_PER_YEAR
MAX_YEARS = 1000


class InvalidPolicyError(FieldError):
    """A policy the caller gave is refused; ``field`` names the bad input."""

    @property
    def request_field(self) -> str | None:
        # The policy's name is the path's last segment (PUT /v1/retention/{scope}/{name}).
        return "path.name" if self.field == "name" else f"body.{self.field}"


@dataclass(frozen=True, slots=True)
class Policy:
    scope: str
    name: str  # "" for the default
    raw_days: int
    rollup_years: tuple[int | None, int | None, int | None]  # per LEVELS; None: for ever

    def years(self, level: str) -> int | None:
        return self.rollup_years[LEVELS.index(level)]

    def as_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "name": self.name,
            "raw_days": self.raw_days,
            **{f"rollup_{lv}_years": y for lv, y in zip(LEVELS, self.rollup_years, strict=True)},
        }


Key = tuple[str, str]


def known_names(scope: str) -> Iterable[str]:
    if scope == "domain":
        return [d.value for d in Domain]
    if scope == "kind":
        return list(KINDS)
    if scope == "quantity":
        return list(QUANTITIES)
    return [""]


def make_policy(
    scope: str,
    name: str,
    raw_days: int,
    rollup_years: Iterable[int | None] = (None, None, None),
) -> Policy:
    """A policy checked against the catalog and the rules; InvalidPolicyError names the field."""
    if scope not in SCOPES:
        raise InvalidPolicyError("scope", f"must be one of {', '.join(SCOPES)}")
    name = "" if scope == "default" else name
    if scope != "default" and name not in set(known_names(scope)):
        raise InvalidPolicyError("name", f"unknown {scope} {name!r}")
    if not 1 <= raw_days <= MAX_RAW_DAYS:
        raise InvalidPolicyError("raw_days", f"must be between 1 and {MAX_RAW_DAYS} days")
    years = tuple(rollup_years)
    if len(years) != len(LEVELS):
        raise InvalidPolicyError("rollup_years", f"one value per grain: {', '.join(LEVELS)}")
    finer_days: float = raw_days
    finer = "raw_days"
    for level, value in zip(LEVELS, years, strict=True):
        field = f"rollup_{level}_years"
        if value is None:
            finer_days, finer = float("inf"), field
            continue
        if not 1 <= value <= MAX_YEARS:
            raise InvalidPolicyError(field, f"must be between 1 and {MAX_YEARS} years (or none)")
        if value * DAYS_PER_YEAR < finer_days:
            raise InvalidPolicyError(field, f"rollups may not be kept shorter than {finer}")
        finer_days, finer = value * DAYS_PER_YEAR, field
    return Policy(scope, name, raw_days, (years[0], years[1], years[2]))


def resolve(policies: Mapping[Key, Policy], domain: str, kind: str, quantity: str) -> Policy:
    """The policy of a series: the most specific that names it, else the default."""
    for scope, name in (("quantity", quantity), ("kind", kind), ("domain", domain)):
        found = policies.get((scope, name))
        if found is not None:
            return found
    return policies.get(("default", ""), DEFAULT)


DEFAULT = Policy("default", "", 400, (None, None, None))


def raw_horizon(policy: Policy, now: datetime) -> datetime:
    """Raw readings of the policy's series older than this go."""
    return now - timedelta(days=policy.raw_days)


def years_ago(now: datetime, years: int) -> datetime:
    """The same calendar moment ``years`` earlier (29 February falls back to the 28th)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


def rollup_horizon(policy: Policy, level: str, now: datetime) -> datetime | None:
    years = policy.years(level)
    return None if years is None else years_ago(now, years)


def shortest(policies: Iterable[Policy], level: str | None) -> timedelta | None:
    """The shortest time anything of ``level`` (None: raw readings) is kept; None: for ever."""
    spans: list[timedelta] = []
    for policy in policies:
        if level is None:
            spans.append(timedelta(days=policy.raw_days))
        elif (years := policy.years(level)) is not None:
            spans.append(timedelta(days=years * DAYS_PER_YEAR))
    return min(spans, default=None)


def longest_raw(policies: Iterable[Policy]) -> timedelta:
    """How long the longest-kept raw readings are kept: whole partitions older are dropped."""
    return max((timedelta(days=p.raw_days) for p in policies), default=timedelta(days=400))
