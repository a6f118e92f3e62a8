"""``urbanpulse dashboards``: build the Grafana JSON, check it is current, push it to Grafana."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli_support import command_settings

from . import build as builder
from .push import PushError
from .push import push as push_all

app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)


@app.command()
def build(
    out: Annotated[Path, typer.Option(help="directory for the JSON files")] = builder.GENERATED,
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; fail if the files are stale")
    ] = False,
) -> None:
    """Generate every dashboard's JSON (one file per dashboard, named by its uid)."""
    if check:
        stale = builder.stale(out)
        if stale:
            typer.echo(f"stale: {', '.join(stale)} (run `urbanpulse dashboards build`)", err=True)
            raise typer.Exit(1)
        typer.echo(f"{len(builder.BOARDS)} dashboards up to date in {out}")
        return
    models = builder.dashboards()
    for path in builder.write(out, models):
        typer.echo(f"{path}  ({len(builder.panels(models[path.stem]))} panels)")


@app.command()
def push(
    url: Annotated[str | None, typer.Option(help="Grafana URL (URBANPULSE_GRAFANA_URL)")] = None,
) -> None:
    """Save every dashboard to Grafana (token: URBANPULSE_GRAFANA_TOKEN)."""
    settings = command_settings()
    target = url or settings.grafana_url
    if not target or settings.grafana_token is None:
        typer.echo("set URBANPULSE_GRAFANA_URL (or --url) and URBANPULSE_GRAFANA_TOKEN", err=True)
        raise typer.Exit(2)
    try:
        pushed = push_all(
            target,
            settings.grafana_token.get_secret_value(),
            builder.dashboards().values(),
            folder=settings.grafana_folder,
        )
    except PushError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    for item in pushed:
        typer.echo(f"{item.uid}: version {item.version} {item.url}")
