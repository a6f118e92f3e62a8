"""Which storage mode a migrated database runs, as recorded by its first upgrade."""

from __future__ import annotations

from typing import Any

import psycopg


def storage_mode(conn: psycopg.Connection[Any]) -> str:
    """``timescaledb`` or ``partitioned``; ends the read-only transaction it opens."""
    row = conn.execute("SELECT value FROM storage_settings WHERE name = 'mode'").fetchone()
    conn.commit()
    return str(row[0]) if row else "partitioned"
