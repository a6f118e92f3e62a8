"""``urbanpulse api``: serve the HTTP API with uvicorn on ``api_host``:``api_port``."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from services.cli_support import command_settings
from services.logs import configure
from services.settings import ApiSettings

from ..app import create_app

app = typer.Typer(help="Serve the HTTP API (FastAPI under /v1).", no_args_is_help=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: URBANPULSE_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: URBANPULSE_API_PORT")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="processes sharing the port (one per core)")
    ] = 1,
) -> None:
    """Run the API until interrupted; ``--workers`` processes share the port (more machines:
    replicas behind a load balancer, state lives in the database)."""
    settings = command_settings()
    if not settings.database_url:
        typer.echo("no database: set URBANPULSE_DATABASE_URL", err=True)
        raise typer.Exit(2)
    configure(settings.log_level, settings.log_format.value)
    tuning = ApiSettings.of(settings)
    host, port = host or tuning.host, tuning.port if port is None else port
    if workers > 1:
        # Each worker process builds its app from the same settings (the environment).
        uvicorn.run(
            "services.api.app:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            proxy_headers=True,
        )
        return
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,  # our logging configuration, not uvicorn's
        proxy_headers=True,
    )
