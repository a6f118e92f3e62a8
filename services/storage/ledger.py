"""The pack ledger: which numbered packs (gateway, stream, seq) are stored (issue 15).

Ingestion claims a pack's key in the transaction that stores its readings (or its quarantine
entry); a key already there means the pack was stored before (a broker redelivery, a gateway's
resend after a lost receipt), and nothing of it is written again. The readings key still guards
against the same reading in two different packs, so forgetting a ledger row is always safe: it
only costs the row-level path for a pack that comes again. That is what makes the pruning
(:func:`prune`) free to drop rows below each stream's ``oldest`` (the gateway no longer holds
those packs) and rows past an age.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import psycopg

Conn = psycopg.Connection[tuple[object, ...]]
# (gateway id, stream, seq, oldest)
PackKey = tuple[str, str, int, int]

_CLAIM = (
    "INSERT INTO pack_ledger (gateway_id, stream, seq, oldest) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[]) "
    "ON CONFLICT DO NOTHING RETURNING gateway_id, stream, seq"
)
# Below the highest ``oldest`` a stream reported: the gateway sends none of those again.
_PRUNE_BELOW_OLDEST = (
    "DELETE FROM pack_ledger l USING (SELECT gateway_id, stream, max(oldest) AS oldest "
    "FROM pack_ledger GROUP BY gateway_id, stream) m "
    "WHERE l.gateway_id = m.gateway_id AND l.stream = m.stream AND l.seq < m.oldest"
)
_PRUNE_BY_AGE = "DELETE FROM pack_ledger WHERE stored_at < now() - %s"


def claim(conn: Conn, keys: Sequence[PackKey]) -> set[tuple[str, str, int]]:
    """Record ``keys`` in the current transaction; return those that were new.

    A key another transaction is inserting waits for it (the primary key's lock), so two
    workers given the same pack store it once.
    """
    if not keys:
        return set()
    columns = list(zip(*keys, strict=True))
    # Pipelined: as a transaction's first statement this goes with its BEGIN, one round trip.
    with conn.pipeline():
        rows = conn.execute(_CLAIM, [list(c) for c in columns]).fetchall()
    return {(str(g), str(s), int(q)) for g, s, q in rows}  # type: ignore[call-overload]


def prune(conn: Conn, retention: timedelta) -> int:
    """Drop rows no gateway will ask about (below ``oldest``) and rows past ``retention``."""
    below = conn.execute(_PRUNE_BELOW_OLDEST).rowcount
    old = conn.execute(_PRUNE_BY_AGE, (retention,)).rowcount
    return max(below, 0) + max(old, 0)
