"""What a statement's plan reads, for tests that check which tables a query touches."""

from __future__ import annotations

from typing import Any

import psycopg


def _scanned(plan: dict[str, Any]) -> list[str]:
    names = [str(plan["Relation Name"])] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        names += _scanned(child)
    return names


def raw_scans(conn: psycopg.Connection[Any], statement: str, values: dict[str, Any]) -> int:
    """How many scans of ``readings`` or of its partitions (partitioned mode) or chunks
    (TimescaleDB) the plan of ``statement`` makes."""
    children = conn.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'readings'::regclass"
    ).fetchall()
    raw = {"readings", *(str(name) for (name,) in children)}
    row = conn.execute("EXPLAIN (FORMAT JSON) " + statement, values).fetchone()
    assert row is not None
    return sum(name in raw for name in _scanned(row[0][0]["Plan"]))
