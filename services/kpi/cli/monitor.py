"""``urbanpulse monitor``: run the monitor loop (services.kpi.monitor) until interrupted, or one
round with ``--once``."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import psycopg
import typer

from services.cli_support import settings_for_command
from services.logs import configure
from services.metrics_http import serve_metrics
from services.monitor.metrics import MonitorMetrics
from services.settings import MonitorSettings
from services.storage.urls import libpq_url

from ..alerts.defaults import install_defaults
from ..monitor import Monitor, run_round

cli = typer.Typer(help="Keep KPI values fresh and evaluate alert rules (the monitor loop).")


# What the help shows as each option's default: the setting's, as no environment sets it.
_DEFAULT = MonitorSettings.defaults()


@cli.callback(invoke_without_command=True)
def monitor(
    database_url: Annotated[
        str | None, typer.Option(help="default: URBANPULSE_DATABASE_URL")
    ] = None,
    every: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="seconds between rounds; "
            f"default: URBANPULSE_MONITOR_EVERY ({_DEFAULT.every_s:g})",
        ),
    ] = None,
    once: Annotated[bool, typer.Option(help="one round, print it, exit")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Prometheus metrics on this port (0: none; not with --once); "
            f"default: URBANPULSE_MONITOR_METRICS_PORT ({_DEFAULT.metrics_port})"
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help="address the metrics listen on (0.0.0.0 in a container); "
            f"default: URBANPULSE_MONITOR_METRICS_HOST ({_DEFAULT.metrics_host})"
        ),
    ] = None,
) -> None:
    """Run the monitor until interrupted (or one round with --once)."""
    settings, url = settings_for_command(database_url)
    configure(settings.log_level, settings.log_format.value)
    if once:
        with psycopg.connect(libpq_url(url)) as conn:
            install_defaults(conn)
            conn.commit()
            result = run_round(conn)
        typer.echo(
            f"{result.kpi_changed} KPI values changed, {result.raised} alerts raised, "
            f"{result.cleared} cleared, {result.open_alerts} open ({result.seconds:.1f} s)"
        )
        return
    tuning = MonitorSettings.of(settings)
    metrics = MonitorMetrics()
    port = tuning.metrics_port if metrics_port is None else metrics_port
    if port:
        serve_metrics(metrics.registry, metrics_host or tuning.metrics_host, port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        Monitor(url, tuning.every_s if every is None else every, metrics=metrics).run(stop)
    except KeyboardInterrupt:
        stop.set()
