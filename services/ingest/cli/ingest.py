"""``urbanpulse ingest``: run an ingestion worker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import threading
from types import FrameType
from typing import Annotated

import typer

from services.cli_support import command_settings
from services.logs import configure as configure_logging
from services.metrics_http import serve_metrics
from services.settings import IngestSettings, Settings

from ..validate import policy
from ..worker import IngestWorker, WorkerConfig

app = typer.Typer(help="Run an ingestion worker: MQTT to the data layer.")


def worker_config(
    settings: Settings,
    *,
    database_url: str,
    mqtt_url: str,
    client_id: str,
    username: str | None,
    password: str | None,
    group: str | None = None,
    batch_records: int | None = None,
    flush_ms: float | None = None,
) -> WorkerConfig:
    """The one Settings -> WorkerConfig conversion: ``urbanpulse ingest`` and ``urbanpulse up``
    build their workers alike, adding only where to connect, as whom, and the options given
    (None: the setting)."""
    tuning = IngestSettings.of(settings)
    return WorkerConfig(
        database_url=database_url,
        mqtt_url=mqtt_url,
        client_id=client_id,
        group=group,
        username=username,
        password=password,
        batch_records=tuning.batch_records if batch_records is None else batch_records,
        flush_ms=tuning.flush_ms if flush_ms is None else flush_ms,
        policy=policy(settings),
        register_unknown=tuning.register_unknown,
        live_events=tuning.live_events,
        events_retention_s=tuning.events_retention_s,
        max_entries_per_message=tuning.max_entries_per_message,
        quarantine_retention_s=tuning.quarantine_retention_s,
        quarantine_max_bytes=tuning.quarantine_max_bytes,
        ledger_retention_s=tuning.ledger_retention_s,
        receipts=tuning.receipts,
        direct_copy=tuning.direct_copy,
    )


# What the help shows as each option's default: the setting's, as no environment sets it.
_DEFAULT = IngestSettings.defaults()


@app.callback(invoke_without_command=True)
def ingest(
    client_id: Annotated[
        str | None,
        typer.Option(
            help="MQTT client id; keep it across restarts so the broker keeps the session"
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="shared-subscription group, to split the stream over several workers "
            "(needs a broker that persists shared subscriptions: Mosquitto >= 2.0.19, "
            "EMQX, HiveMQ)"
        ),
    ] = None,
    batch_records: Annotated[
        int | None,
        typer.Option(
            help="at most this many records a batch (one transaction); "
            f"default: URBANPULSE_INGEST_BATCH_RECORDS ({_DEFAULT.batch_records})"
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Prometheus metrics on this port (0: none); "
            f"default: URBANPULSE_INGEST_METRICS_PORT ({_DEFAULT.metrics_port})"
        ),
    ] = None,
    *,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help="address the metrics listen on (0.0.0.0 in a container); "
            f"default: URBANPULSE_INGEST_METRICS_HOST ({_DEFAULT.metrics_host})"
        ),
    ] = None,
    flush_ms: Annotated[
        float | None,
        typer.Option(
            help="a batch goes when the writer is free and nothing more is queued, or this "
            "long after its first message while messages keep coming; "
            f"default: URBANPULSE_INGEST_FLUSH_MS ({_DEFAULT.flush_ms:g})"
        ),
    ] = None,
) -> None:
    """Subscribe to every gateway's readings and status and land them in the database."""
    settings = command_settings()
    if not settings.database_url or not settings.mqtt_url:
        typer.echo(
            "set URBANPULSE_DATABASE_URL and URBANPULSE_MQTT_URL "
            "(or URBANPULSE_ENV_FILE=.urbanpulse/urbanpulse.env)",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(settings.log_level, settings.log_format.value)
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    worker = IngestWorker(
        worker_config(
            settings,
            database_url=settings.database_url,
            mqtt_url=settings.mqtt_url,
            client_id=client_id or f"ingest-{socket.gethostname()}",
            group=group,
            username=settings.mqtt_username,
            password=password,
            batch_records=batch_records,
            flush_ms=flush_ms,
        )
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    tuning = IngestSettings.of(settings)
    port = tuning.metrics_port if metrics_port is None else metrics_port
    if port:
        serve_metrics(worker.metrics.registry, metrics_host or tuning.metrics_host, port)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tune_garbage_collector()
    worker.run(stop, on_ready=lambda: logging.getLogger(__name__).info("ingesting"))


def tune_garbage_collector() -> None:
    """Collect cycles less often in a process that only ingests.

    A batch is tens of thousands of tuples and records that live until its commit: with
    CPython's default thresholds (a young collection every 700 allocations) they are scanned
    again and again and promoted, and full collections then walk them all. py-spy put about
    8 % of the worker's CPU at packs of 10 readings into collections. The worker makes few
    cycles, so collecting every 50,000 allocations costs little memory (bench_ingest prints the
    worker's peak RSS); what was loaded at start (modules, settings) is frozen out of
    collections."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
