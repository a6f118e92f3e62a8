"""Where the API reads, decided from a standby's state (the pure core of
``services.readreplica.routing``; the real standby is in test_replica.py)."""

from __future__ import annotations

import pytest

from services.readreplica.lag import StandbyState
from services.readreplica.routing import report, usable
from services.settings import SettingsError, load_settings


def _standby(lag_s: float | None, *, caught_up: bool) -> StandbyState:
    return StandbyState(in_recovery=True, lag_s=lag_s, caught_up=caught_up)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # Replayed all it received: current, however long the primary has been idle.
        (_standby(3600.0, caught_up=True), True),
        (_standby(None, caught_up=True), True),
        (_standby(29.9, caught_up=False), True),
        (_standby(30.1, caught_up=False), False),
        # Behind, and no replayed commit to measure from: not known to be fresh.
        (_standby(None, caught_up=False), False),
        # A promoted standby (or the primary itself) is current by definition.
        (StandbyState(in_recovery=False, lag_s=0.0, caught_up=True), True),
    ],
)
def test_a_standby_is_read_within_the_maximum_lag(state: StandbyState, expected: bool) -> None:
    assert usable(state, 30.0) is expected
    assert report(state, 30.0).use_replica is expected


def test_the_report_says_why_reads_moved() -> None:
    assert report(None, 30.0, "OperationalError").detail == (
        "unreachable: OperationalError; reads on the primary"
    )
    lagging = report(_standby(45.0, caught_up=False), 30.0)
    assert lagging.detail == "replay lag 45.0 s (max 30 s); reads on the primary"
    assert report(_standby(2.0, caught_up=True), 30.0).detail == (
        "caught up (max 30 s); reads on the replica"
    )


def test_the_read_url_must_be_a_postgresql_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URBANPULSE_ENV_FILE", "/nonexistent")
    monkeypatch.setenv("URBANPULSE_DATABASE_READ_URL", "mysql://replica/urbanpulse")
    with pytest.raises(SettingsError, match="URBANPULSE_DATABASE_READ_URL"):
        load_settings()
    monkeypatch.setenv("URBANPULSE_DATABASE_READ_URL", "postgresql://replica/urbanpulse")
    monkeypatch.setenv("URBANPULSE_DATABASE_READ_MAX_LAG", "0")
    with pytest.raises(SettingsError, match="URBANPULSE_DATABASE_READ_MAX_LAG"):
        load_settings()


def test_an_empty_read_url_means_no_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    # What deploy/compose.yaml passes when no standby is configured.
    monkeypatch.setenv("URBANPULSE_ENV_FILE", "/nonexistent")
    monkeypatch.setenv("URBANPULSE_DATABASE_READ_URL", "")
    assert load_settings().database_read_url is None
    monkeypatch.setenv("URBANPULSE_DATABASE_READ_URL", "postgresql://replica/urbanpulse")
    assert load_settings().database_read_url == "postgresql://replica/urbanpulse"
