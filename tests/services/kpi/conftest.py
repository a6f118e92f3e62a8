"""Data builders for the KPI tests: a small city registered by hand, readings written through the
real write path and rolled up, so every KPI test states its data set and its answer in a page.

``city`` (a :class:`City` on the ``db`` connection, once per storage mode)::

    city.district("d1", customers_served=100)          # reference data as keyword arguments
    fdr = city.sensor("fdr-1", "feeder_meter", "d1", feeder="F1", customers_served=100)
    city.series(fdr, "voltage", T0, T0 + timedelta(hours=1), step_s=60, value=230.0)
    city.write([(fdr, "voltage", T0, 0.0)])             # (sensor key, quantity, time, value)
    city.refresh()                                      # rollups up to date (series/write do it)

Times are timezone-aware datetimes; pick them in the past (partition-mode rollups stop at the
current minute unless told otherwise, and ``refresh`` tells them the last reading's minute).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from gateway.kinds import KINDS, QUANTITIES
from services.storage import rollups
from services.storage.writer import ReadingWriter

Conn = psycopg.Connection[tuple[object, ...]]
# (sensor key, quantity name, time, value)
Point = tuple[int, str, datetime, float]


@dataclass
class City:
    """A hand-built city on one test database: districts, gateways, sensors and readings."""

    conn: Conn
    mode: str
    writer: ReadingWriter
    sensors: dict[str, int] = field(default_factory=dict)
    _latest: datetime | None = None

    def district(
        self,
        district_id: str,
        *,
        name: str | None = None,
        population: int | None = None,
        households: int | None = None,
        **reference: Any,
    ) -> str:
        """Register a district (and a gateway named ``gw-<id>`` for its sensors)."""
        self.conn.execute(
            "INSERT INTO districts (id, name, population, households, reference) "
            "VALUES (%s, %s, %s, %s, %s)",
            (district_id, name or district_id, population, households, Jsonb(reference)),
        )
        self.conn.execute(
            "INSERT INTO gateways (id, district_id) VALUES (%s, %s)",
            (f"gw-{district_id}", district_id),
        )
        self.conn.commit()
        return district_id

    def sensor(
        self,
        sensor_id: str,
        kind: str,
        district_id: str | None,
        *,
        interval_s: float | None = None,
        **columns: Any,
    ) -> int:
        """Register a sensor; ``columns`` are any other registry columns (feeder, dma,
        customers_served, status, installed_at, retired_at, segment_length_m...). Returns its key.
        """
        values: dict[str, Any] = {
            "id": sensor_id,
            "kind": kind,
            "domain": KINDS[kind].domain.value,
            "gateway_id": f"gw-{district_id}" if district_id else None,
            "district_id": district_id,
            "interval_s": interval_s or KINDS[kind].interval_s,
            **columns,
        }
        if "metadata" in values:
            values["metadata"] = Jsonb(values["metadata"])
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        row = self.conn.execute(
            f"INSERT INTO sensors ({names}) VALUES ({marks}) RETURNING key",
            tuple(values.values()),
        ).fetchone()
        assert row is not None
        self.conn.commit()
        key = int(str(row[0]))
        self.sensors[sensor_id] = key
        return key

    def setting(self, name: str, value: Any) -> None:
        """Set one ``city_settings`` entry (timezone, grid_renewable_fraction...)."""
        self.conn.execute(
            "INSERT INTO city_settings (name, value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, Jsonb(value)),
        )
        self.conn.commit()

    def write(self, points: Iterable[Point], *, refresh: bool = True) -> None:
        """Write readings through the real COPY path, commit, and (by default) roll them up."""
        rows = [(t.timestamp(), key, QUANTITIES[q].key, float(v)) for key, q, t, v in points]
        if not rows:
            return
        self.writer.write(rows)
        self.conn.commit()
        latest = datetime.fromtimestamp(max(r[0] for r in rows), UTC)
        self._latest = latest if self._latest is None else max(self._latest, latest)
        if refresh:
            self.refresh()

    def series(
        self,
        sensor_key: int,
        quantity: str,
        start: datetime,
        end: datetime,
        *,
        step_s: float,
        value: float | Callable[[datetime], float],
        refresh: bool = True,
    ) -> int:
        """Readings every ``step_s`` seconds in [start, end); ``value`` is a constant or a
        function of the time. Returns how many were written."""
        points: list[Point] = []
        moment = start
        while moment < end:
            v = value(moment) if callable(value) else value
            points.append((sensor_key, quantity, moment, v))
            moment += timedelta(seconds=step_s)
        self.write(points, refresh=refresh)
        return len(points)

    def refresh(self) -> None:
        """Roll up everything written so far, the last reading's minute included."""
        now = datetime.now(UTC)
        if self._latest is not None:
            now = max(now, self._latest + timedelta(minutes=1))
        rollups.refresh(self.conn, self.mode, now=now)


@pytest.fixture
def city(db: Conn) -> City:
    row = db.execute("SELECT value FROM storage_settings WHERE name = 'mode'").fetchone()
    assert row is not None
    mode = str(row[0])
    return City(conn=db, mode=mode, writer=ReadingWriter(db, mode))
