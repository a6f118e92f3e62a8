"""What a statement's plan reads, for tests that check which tables a query touches."""

from __future__ import annotations

from typing import Any

import psycopg

# EXPLAIN shows the children of an Append (or TimescaleDB's ChunkAppend) left after the pruning
# done as the statement starts; these count the ones pruned then, which were planned all the same.
_PRUNED_AT_START = ("Subplans Removed", "Chunks excluded during startup")


def _planned(plan: dict[str, Any], raw: set[str]) -> int:
    children: list[dict[str, Any]] = plan.get("Plans", [])
    count = int(plan.get("Relation Name") in raw)
    if any(child.get("Relation Name") in raw for child in children):
        count += sum(int(plan.get(key, 0)) for key in _PRUNED_AT_START)
    return count + sum(_planned(child, raw) for child in children)


def raw_scans(conn: psycopg.Connection[Any], statement: str, values: dict[str, Any]) -> int:
    """How many scans of ``readings`` or of its partitions (partitioned mode) or chunks
    (TimescaleDB) the planner planned for ``statement``: those in its plan and those pruned only
    when it starts (planned, so paid for in planning time, but not shown)."""
    children = conn.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'readings'::regclass"
    ).fetchall()
    raw = {"readings", *(str(name) for (name,) in children)}
    row = conn.execute("EXPLAIN (FORMAT JSON) " + statement, values).fetchone()
    assert row is not None
    return _planned(row[0][0]["Plan"], raw)
