"""The Prometheus endpoint of a long-running command (``urbanpulse ingest``, ``urbanpulse
monitor``): served from a daemon thread, or the command ends saying which address was taken."""

from __future__ import annotations

import typer
from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> None:
    """Serve ``registry`` on ``http://host:port/metrics``; exit with status 2 if it cannot."""
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        typer.echo(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}): "
            "pass another --metrics-port, or 0 for none",
            err=True,
        )
        raise typer.Exit(2) from None
