"""``urbanpulse gateway``: a field gateway, from sensor drivers to the broker."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError

from gateway.app import GatewayApp
from gateway.config import GatewaySettings
from gateway.drivers import open_driver
from gateway.outbox import OutboxError

app = typer.Typer(
    help="Run a field gateway: drivers to SenML packs, store-and-forward over MQTT.",
    no_args_is_help=False,
    pretty_exceptions_show_locals=False,
)


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML settings file (URBANPULSE_GATEWAY_* override it).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    driver: Annotated[
        str | None,
        typer.Option("--driver", help="jsonl:PATH, line (stdin) or simulator[:CITY]."),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", min=0, help="Replay speed-up (0: as fast as possible)."),
    ] = None,
    gateway_id: Annotated[str | None, typer.Option("--gateway-id")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Read sensors, pack SenML, publish at QoS 1 through an on-disk outbox until SIGTERM."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = GatewaySettings.load(config, driver=driver, speed=speed, gateway_id=gateway_id)
        source = open_driver(settings.driver, settings.gateway_id, settings.speed)
        gateway = GatewayApp(settings, source)
    except (ValidationError, ValueError, OSError) as exc:
        typer.echo(f"urbanpulse gateway: {exc}", err=True)
        raise typer.Exit(2) from None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        gateway.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        gateway.run()
    except OutboxError as exc:
        typer.echo(f"urbanpulse gateway: {exc}", err=True)
        raise typer.Exit(1) from None
