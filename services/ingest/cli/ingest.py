"""``urbanpulse ingest``: run an ingestion worker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import threading
from types import FrameType
from typing import Annotated, Any

import typer

from services.logs import configure as configure_logging
from services.metrics_http import serve_metrics
from services.settings import Settings, SettingsError, UnknownSensors, load_settings

from ..validate import policy
from ..worker import IngestWorker, WorkerConfig

app = typer.Typer(help="Run an ingestion worker: MQTT to the data layer.")


def limits(settings: Settings) -> dict[str, Any]:
    """The worker's validation policy and quarantine bounds, from the settings."""
    return {
        "policy": policy(settings),
        "max_entries_per_message": settings.quarantine_max_entries_per_message,
        "quarantine_retention_s": settings.quarantine_retention.total_seconds(),
        "quarantine_max_bytes": settings.quarantine_max_bytes,
        "ledger_retention_s": settings.pack_ledger_retention.total_seconds(),
        "receipts": settings.receipts,
        "direct_copy": settings.direct_copy,
    }


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Every ``WorkerConfig`` field the settings decide: :func:`limits`, what becomes of unknown
    sensors and the live stream's events. The one conversion: ``urbanpulse ingest`` and
    ``urbanpulse up`` build their workers alike, adding only where to connect and as whom."""
    return {
        **limits(settings),
        "register_unknown": settings.unknown_sensors == UnknownSensors.REGISTER,
        "live_events": settings.live_readings,
        "events_retention_s": settings.events_retention.total_seconds(),
    }


# The worker's own defaults, so its options cannot say otherwise.
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(WorkerConfig)}


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
        int, typer.Option(help="at most this many records a batch (one transaction)")
    ] = _DEFAULTS["batch_records"],
    metrics_port: Annotated[
        int, typer.Option(help="Prometheus metrics on this port (0: none)")
    ] = 9108,
    *,
    metrics_host: Annotated[
        str, typer.Option(help="address the metrics listen on (0.0.0.0 in a container)")
    ] = "127.0.0.1",
    flush_ms: Annotated[
        float,
        typer.Option(
            help="a batch goes when the writer is free and nothing more is queued, or this "
            "long after its first message while messages keep coming"
        ),
    ] = _DEFAULTS["flush_ms"],
) -> None:
    """Subscribe to every gateway's readings and status and land them in the database."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
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
        WorkerConfig(
            database_url=settings.database_url,
            mqtt_url=settings.mqtt_url,
            client_id=client_id or f"ingest-{socket.gethostname()}",
            group=group,
            batch_records=batch_records,
            flush_ms=flush_ms,
            username=settings.mqtt_username,
            password=password,
            **worker_settings(settings),
        )
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if metrics_port:
        serve_metrics(worker.metrics.registry, metrics_host, metrics_port)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run(stop, on_ready=lambda: logging.getLogger(__name__).info("ingesting"))
