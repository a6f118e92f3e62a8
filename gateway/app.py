"""The gateway's loop: driver records -> per-sensor SenML packs -> outbox -> broker.

A reader thread drains the driver into a queue, so a driver that blocks (stdin) never holds back
the age limit, and the main loop owns everything else: a :class:`Packer` groups each sensor's
records into a pack, sent when it holds ``max_records`` or its first record is ``max_age`` old;
every pack goes through :meth:`Publisher.put` (outbox first, then the broker at QoS 1), and a JSON
status file is rewritten every few seconds. On stop (SIGTERM, or the driver's end) the partial
packs go into the outbox and the publisher says offline; what the broker has not acknowledged
stays in the outbox for the next start.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import GatewaySettings
from gateway.drivers import Driver
from gateway.names import split_name
from gateway.outbox import Outbox, OutboxFullError
from gateway.publisher import Publisher
from gateway.senml import Record, SenMLError, encode

__all__ = ["Counters", "GatewayApp", "Packer", "write_status"]

logger = logging.getLogger(__name__)

_END = object()  # the reader thread's last word
_TICK = 0.1  # how often the loop looks at the age limit and the stop flag
_STOP_DRAIN_S = 2.0  # on a stop: how long a connected publisher may take for the last packs


@dataclass
class _Pending:
    started: float
    records: list[Record] = field(default_factory=list)


class Packer:
    """Groups records per sensor; pure apart from the injected clock (monotonic seconds)."""

    def __init__(
        self, max_records: int, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_records < 1 or max_age <= 0:
            raise ValueError("need max_records >= 1 and max_age > 0")
        self.max_records = max_records
        self.max_age = max_age
        self.clock = clock
        self._pending: dict[str, _Pending] = {}

    @staticmethod
    def key(record: Record) -> str:
        parts = split_name(record.name)
        return record.name if parts is None else parts[0]

    def add(self, record: Record) -> list[list[Record]]:
        """Add a record; return the packs it completed (by size), then any that are due by age."""
        key = self.key(record)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(self.clock())
        pending.records.append(record)
        full: list[list[Record]] = []
        if len(pending.records) >= self.max_records:
            full.append(self._pending.pop(key).records)
        return full + self.due()

    def due(self) -> list[list[Record]]:
        """The packs whose first record is ``max_age`` old, oldest first."""
        now = self.clock()
        keys = [k for k, p in self._pending.items() if now - p.started >= self.max_age]
        return [self._pending.pop(k).records for k in keys]

    def flush(self) -> list[list[Record]]:
        """Every partial pack."""
        packs = [p.records for p in self._pending.values()]
        self._pending.clear()
        return packs

    @property
    def pending(self) -> int:
        return sum(len(p.records) for p in self._pending.values())


@dataclass
class Counters:
    records_read: int = 0
    packs_put: int = 0
    records_put: int = 0
    packs_refused: int = 0
    unencodable: int = 0
    bad_lines: int = 0
    not_attached: int = 0  # readings of a sensor not in the gateway's list


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Write the status file atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class GatewayApp:
    """One gateway process; :meth:`run` until the driver ends or :meth:`stop` is called."""

    def __init__(self, settings: GatewaySettings, driver: Driver) -> None:
        self._attached = frozenset(settings.sensors)
        self.settings = settings
        self.driver = driver
        self.counters = Counters()
        self.packer = Packer(settings.pack_max_records, settings.pack_max_age_s)
        self._stop = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=10_000)
        self.publisher: Publisher | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to finish (safe from a signal handler or another thread)."""
        self._stop.set()
        self.driver.close()

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"updated_at": time.time(), "driver": self.driver.name}
        if self.publisher is not None:
            status.update(asdict(self.publisher.health()))
        self.counters.bad_lines = self.driver.bad_lines
        status["counters"] = asdict(self.counters)
        status["pending_records"] = self.packer.pending
        return status

    def run(self) -> None:
        settings = self.settings
        with Outbox(settings.outbox_path, settings.cap()) as outbox:
            self.publisher = publisher = Publisher(outbox, settings.publisher_options())
            publisher.start()
            reader = threading.Thread(target=self._read, name="gateway-driver", daemon=True)
            reader.start()
            driver_ended = False
            try:
                driver_ended = self._loop(publisher)
                for pack in self.packer.flush():
                    self._put(publisher, pack)
                # After the driver's end, wait for the broker to take everything; after a stop,
                # give a connected publisher a moment for the last packs (the rest keeps).
                drain = settings.drain_timeout_s if driver_ended else _STOP_DRAIN_S
                if drain > 0 and (driver_ended or publisher.health().connected):
                    publisher.wait_until(lambda h: h.outbox_depth == 0, drain)
            finally:
                self.driver.close()
                publisher.stop()
                self._write_status()
            logger.info(
                "gateway %s stopped: %s", settings.gateway_id, json.dumps(asdict(self.counters))
            )

    def _loop(self, publisher: Publisher) -> bool:
        """Pack until stopped (False) or the driver ended (True)."""
        next_status = 0.0
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_TICK)
            except queue.Empty:
                item = None
            if item is _END:
                return True
            packs = self.packer.due() if item is None else self._add(item)
            for pack in packs:
                self._put(publisher, pack)
            if time.monotonic() >= next_status:
                self._write_status()
                next_status = time.monotonic() + self.settings.status_interval_s
        return False

    def _add(self, item: object) -> list[list[Record]]:
        assert isinstance(item, Record)
        self.counters.records_read += 1
        if self._attached:
            parts = split_name(item.name)
            if parts is None or parts[0] not in self._attached:
                # The broker would refuse nothing, but ingestion would quarantine it as another
                # gateway's sensor: say so here, where the wiring can be fixed.
                self.counters.not_attached += 1
                logger.warning(
                    "reading of %s: not a sensor of gateway %s", item.name, self.settings.gateway_id
                )
                return []
        return self.packer.add(item)

    def _read(self) -> None:
        try:
            for record in self.driver.read():
                while not self._stop.is_set():
                    try:
                        self._queue.put(record, timeout=_TICK)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except Exception:
            logger.exception("driver %s failed", self.driver.name)
        finally:
            while not self._stop.is_set():
                try:
                    self._queue.put(_END, timeout=_TICK)
                    break
                except queue.Full:
                    continue

    def _put(self, publisher: Publisher, records: list[Record]) -> None:
        try:
            payload = encode(records)
        except SenMLError as exc:
            self.counters.unencodable += len(records)
            logger.error(
                "gateway %s: pack not encodable, dropped: %s", self.settings.gateway_id, exc
            )
            return
        try:
            publisher.put(payload)
        except OutboxFullError as exc:  # the cap refused it; the outbox logged and counted it
            self.counters.packs_refused += 1
            logger.debug("%s", exc)
            return
        self.counters.packs_put += 1
        self.counters.records_put += len(records)

    def _write_status(self) -> None:
        path = self.settings.status_file
        if path is None:
            return
        try:
            write_status(path, self.status())
        except OSError as exc:
            logger.warning("gateway %s: status file %s: %s", self.settings.gateway_id, path, exc)
