"""Fixtures shared by the ingestion tests: a small registered city, and workers run in threads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import psycopg
import pytest

from services.ingest.worker import IngestWorker, WorkerConfig
from tests.fixtures.broker import BrokerUnderTest

Conn = psycopg.Connection[tuple[object, ...]]
# make_city(gateways, {sensor id: gateway id}) -> (database URL, an open connection to it)
MakeCity = Callable[[Sequence[str], Mapping[str, str]], tuple[str, Conn]]
StartWorker = Callable[..., IngestWorker]


@pytest.fixture
def gateway_id() -> str:
    """A gateway id of this test's own: the workers of other tests subscribe to every gateway,
    and a retained message stays on the session's broker unless cleared."""
    return f"gw-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_city(make_database: Callable[[str], str]) -> Iterator[MakeCity]:
    """A fresh partitioned database with ``gateways`` and feeder meters on them."""
    opened: list[Conn] = []

    def make(gateways: Sequence[str], meters: Mapping[str, str]) -> tuple[str, Conn]:
        url = make_database("partitioned")
        conn = psycopg.connect(url)
        opened.append(conn)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO gateways (id) VALUES (%s)", [(g,) for g in gateways])
            cur.executemany(
                "INSERT INTO sensors (id, kind, domain, gateway_id) "
                "VALUES (%s, 'feeder_meter', 'energy', %s)",
                list(meters.items()),
            )
        conn.commit()
        return url, conn

    yield make
    for conn in opened:
        conn.close()


class Workers:
    """Ingestion workers run in threads for one test, all stopped at its end."""

    def __init__(self, broker: BrokerUnderTest) -> None:
        self.broker = broker
        self._running: dict[int, tuple[threading.Thread, threading.Event]] = {}

    def start(
        self,
        database_url: str,
        *,
        broker: BrokerUnderTest | None = None,
        settle_s: float = 0.2,
        **options: object,
    ) -> IngestWorker:
        """A worker on ``broker`` (default: the session's), once subscribed; ``options`` are
        ``WorkerConfig`` fields."""
        config: dict[str, object] = {
            "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
            "session_expiry_s": 120,
            "flush_ms": 20,
            **options,
        }
        worker = IngestWorker(
            WorkerConfig(
                database_url=database_url,
                mqtt_url=(broker or self.broker).url,
                **config,  # type: ignore[arg-type]
            )
        )
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop, ready.set), daemon=True)
        thread.start()
        assert ready.wait(15), "the worker did not subscribe"
        self._running[id(worker)] = (thread, stop)
        time.sleep(settle_s)
        return worker

    def stop(self, worker: IngestWorker, join_s: float = 15) -> None:
        """Ask ``worker`` to stop (its persistent session stays at the broker) and wait."""
        thread, stop = self._running.pop(id(worker))
        stop.set()
        thread.join(join_s)

    def stop_all(self) -> None:
        for _thread, stop in self._running.values():
            stop.set()
        for thread, _stop in self._running.values():
            thread.join(15)
        self._running.clear()


@pytest.fixture
def workers(mqtt_broker: BrokerUnderTest) -> Iterator[Workers]:
    running = Workers(mqtt_broker)
    yield running
    running.stop_all()


@pytest.fixture
def start_worker(workers: Workers) -> StartWorker:
    return workers.start
