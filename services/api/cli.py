"""``urbanpulse api``: serve the HTTP API with uvicorn on ``api_host``:``api_port``."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from services.logs import configure
from services.settings import SettingsError, load_settings

from .app import create_app

app = typer.Typer(help="Serve the HTTP API (FastAPI under /v1).", no_args_is_help=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: URBANPULSE_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: URBANPULSE_API_PORT")] = None,
) -> None:
    """Run the API until interrupted (one process; run more behind a load balancer)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not settings.database_url:
        typer.echo("no database: set URBANPULSE_DATABASE_URL", err=True)
        raise typer.Exit(2)
    configure(settings.log_level, settings.log_format.value)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        log_config=None,  # our logging configuration, not uvicorn's
        proxy_headers=True,
    )
