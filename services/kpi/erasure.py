"""An erasure with what it changes downstream: the stored current KPI values.

``services.storage.erasure`` removes the raw readings (and, ``recompute``, their share of the
rollups). KPI values of past periods are computed from the rollups when asked, so nothing of
them is stored; the current day, month and year are (``kpi_current``), and are recomputed here
when a recomputing erasure reaches into the current year (a day's margin for the city's zone),
or, where the caller's role may not write them (the API's), by the monitor's next round.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import TupleRow

from services.storage import erasure

from . import engine


def erase(
    conn: psycopg.Connection[TupleRow],
    mode: str,
    request: erasure.Request,
    *,
    max_span: timedelta,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Erase (see ``services.storage.erasure.erase``), then refresh the current KPI values when
    they may have changed; the audit row gains ``kpis_refreshed``."""
    moment = now or datetime.now(UTC)
    done = erasure.erase(conn, mode, request, max_span=max_span, now=moment)
    current_from = datetime(moment.year, 1, 1, tzinfo=UTC) - timedelta(days=1)
    refreshed = request.rollups == "recompute" and request.end > current_from
    if refreshed:
        try:
            engine.refresh_current(conn, moment)
        except psycopg.errors.InsufficientPrivilege:
            # The API's role may not write them: the monitor's next round (a minute) does.
            conn.rollback()
            refreshed = False
    return {**done, "kpis_refreshed": refreshed}
