"""Retention policies as values: which policy a series falls under, and what a policy may say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.storage.retention_policy import (
    DEFAULT,
    InvalidPolicyError,
    longest_raw,
    make_policy,
    resolve,
    shortest,
    years_ago,
)

DOMAIN = make_policy("domain", "environment", 30)
KIND = make_policy("kind", "noise", 7)
QUANTITY = make_policy("quantity", "pm25", 90, (2, 10, None))
ALL = {(p.scope, p.name): p for p in (DEFAULT, DOMAIN, KIND, QUANTITY)}


@pytest.mark.parametrize(
    ("domain", "kind", "quantity", "expected"),
    [
        ("environment", "air_quality", "pm25", QUANTITY),  # quantity beats kind and domain
        ("environment", "noise", "pm25", QUANTITY),
        ("environment", "noise", "laeq", KIND),  # kind beats domain
        ("environment", "air_quality", "no2", DOMAIN),
        ("energy", "feeder_meter", "power", DEFAULT),
    ],
    ids=["quantity", "quantity-over-kind", "kind", "domain", "default"],
)
def test_the_most_specific_policy_wins(
    domain: str, kind: str, quantity: str, expected: object
) -> None:
    assert resolve(ALL, domain, kind, quantity) == expected


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        (("planet", "earth", 30), "scope", "must be one of"),
        (("domain", "sewage", 30), "name", "unknown domain 'sewage'"),
        (("kind", "teapot", 30), "name", "unknown kind 'teapot'"),
        (("quantity", "mood", 30), "name", "unknown quantity 'mood'"),
        (("default", "", -1), "raw_days", "between 1 and"),
        (("default", "", 0), "raw_days", "between 1 and"),
        (("default", "", 400, (1, None, None)), "rollup_1m_years", "shorter than raw_days"),
        (("default", "", 30, (5, 2, None)), "rollup_1h_years", "shorter than rollup_1m_years"),
        (("default", "", 30, (None, 2, None)), "rollup_1h_years", "shorter than rollup_1m_years"),
        (("default", "", 30, (None, None, 0)), "rollup_1d_years", "between 1 and"),
    ],
    ids=[
        "scope",
        "domain",
        "kind",
        "quantity",
        "negative",
        "zero",
        "rollups-below-raw",
        "hours-below-minutes",
        "hours-below-minutes-for-ever",
        "zero-years",
    ],
)
def test_refusals_name_the_field(args: tuple[object, ...], field: str, message: str) -> None:
    with pytest.raises(InvalidPolicyError, match=message) as refused:
        make_policy(*args)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_spans_and_years() -> None:
    policies = ALL.values()
    assert shortest(policies, None) == timedelta(days=7)
    assert shortest(policies, "1m") == timedelta(days=2 * 365)
    assert shortest(policies, "1d") is None  # kept for ever by all
    assert longest_raw(policies) == timedelta(days=400)
    assert years_ago(datetime(2028, 2, 29, 12, tzinfo=UTC), 1) == datetime(
        2027, 2, 28, 12, tzinfo=UTC
    )
