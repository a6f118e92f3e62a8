"""How far a streaming standby is behind its primary, asked of the standby itself.

``/readyz`` would report this for ``URBANPULSE_DATABASE_READ_URL``: a standby that is up but far
behind serves stale answers, which is a readiness fact, not a liveness one.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow


@dataclass(frozen=True, slots=True)
class StandbyState:
    in_recovery: bool  # False: this is a primary (or a promoted standby)
    # Seconds since the last transaction replayed was committed on the primary, when the
    # standby has replayed everything it received; None before the first replay.
    lag_s: float | None
    caught_up: bool  # replayed everything it has received


QUERY = """
SELECT pg_is_in_recovery(),
       extract(epoch FROM now() - pg_last_xact_replay_timestamp()),
       pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
"""


def standby_state(conn: psycopg.Connection[TupleRow]) -> StandbyState:
    """The standby's recovery state and replay lag. An idle primary commits nothing, so the lag
    grows while nothing happens: a standby that is ``caught_up`` is current whatever it says."""
    row = conn.execute(QUERY).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    in_recovery, lag, caught_up = row
    if not in_recovery:
        return StandbyState(in_recovery=False, lag_s=0.0, caught_up=True)
    return StandbyState(
        in_recovery=True,
        lag_s=None if lag is None else float(lag),
        caught_up=bool(caught_up),
    )
