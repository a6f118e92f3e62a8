"""The ingestion worker's view of the sensor registry: loaded once, topped up on a miss.

A sensor registered after the worker started is found on its first reading (one query for all
the unknown ids of a batch); an id still unknown is not asked about again for
``negative_ttl_s``, so a misconfigured device cannot turn every message into a query.

The retention policies come with every load (``retention_policies``): each sensor carries the
raw retention of its quantities (``validate.Sensor.raw_kept``, resolved once per domain and
kind), which is how old a reading of it may be. A policy changed is seen at the next reload,
like a sensor re-kinded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import psycopg

from gateway.names import split_name
from gateway.senml import Record
from services.storage import retention
from services.storage.retention_policy import Key
from services.storage.retention_policy import Policy as RetentionPolicy

from .validate import RawKept, Sensor, raw_kept

_SELECT = (
    "SELECT key, id, kind, gateway_id, status, interval_s, lanes, rated_max, domain FROM sensors"
)


class SensorDirectory:
    """The registry snapshot, reloaded every ``reload_every_s`` and topped up on a miss."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        negative_ttl_s: float = 10.0,
        reload_every_s: float = 60.0,
    ) -> None:
        self.conn = conn
        self.negative_ttl_s = negative_ttl_s
        # A sensor retired, re-kinded, moved or promoted from pending is seen within this.
        self.reload_every_s = reload_every_s
        self._loaded_at = 0.0
        self.snapshot: dict[str, Sensor] = {}
        self.policies: dict[Key, RetentionPolicy] = {}
        self._kept: dict[tuple[str, str], tuple[RawKept, ...]] = {}  # (domain, kind) -> kept
        # Bumped whenever the snapshot changes, so cached resolutions can be dropped.
        self.version = 0
        self._known_names: set[str] = set()  # record names whose sensor is in the snapshot
        self._unknown: dict[str, float] = {}  # id -> when we last found it missing
        self.load()

    def load(self) -> None:
        rows = self.conn.execute(_SELECT).fetchall()
        self.policies = retention.policies(self.conn)
        self.conn.commit()
        self._kept.clear()
        self.snapshot = {sensor.id: sensor for sensor in map(self._sensor, rows)}
        self._unknown.clear()
        self._known_names.clear()
        self._loaded_at = time.monotonic()
        self.version += 1

    def ensure(self, records: Iterable[Record]) -> None:
        """Look up the sensors of ``records`` that are not known yet."""
        now = time.monotonic()
        if now - self._loaded_at >= self.reload_every_s:
            self.load()
        missing = set()
        known_names = self._known_names
        for record in records:
            if record.name in known_names:
                continue
            parts = split_name(record.name)
            if parts is None:
                continue
            if parts[0] in self.snapshot:
                known_names.add(record.name)
                continue
            if now - self._unknown.get(parts[0], -1e18) >= self.negative_ttl_s:
                missing.add(parts[0])
        if not missing:
            return
        rows = self.conn.execute(_SELECT + " WHERE id = ANY(%s)", (sorted(missing),)).fetchall()
        # End the read-only transaction: a connection idle in one holds a lock that would
        # block any later ALTER TABLE sensors (a migration) and everything queued behind it.
        self.conn.commit()
        for sensor in map(self._sensor, rows):
            self.snapshot[sensor.id] = sensor
            missing.discard(sensor.id)
            self.version += 1
        for sensor_id in missing:
            self._unknown[sensor_id] = now

    def _sensor(self, row: tuple[Any, ...]) -> Sensor:
        key, sensor_id, kind, gateway_id, status, interval_s, lanes, rated_max, domain = row
        kept = self._kept.get((domain, kind))
        if kept is None:
            kept = self._kept[domain, kind] = raw_kept(self.policies, domain, kind)
        return Sensor(
            key=key,
            id=sensor_id,
            kind=kind,
            gateway_id=gateway_id,
            status=status,
            interval_s=interval_s,
            lanes=lanes,
            rated_max=rated_max,
            raw_kept=kept,
        )
