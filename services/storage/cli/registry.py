"""``urbanpulse registry load``: register districts, gateways and sensors from a manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from services.cli_support import settings_for_command

from ..registry import ManifestError, load, read_manifest
from ..urls import libpq_url

app = typer.Typer(help="The registry: bulk registration from a manifest.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


@app.callback()
def _registry() -> None:
    """The registry: districts, gateways, sensors."""


@app.command("load")
def load_command(
    manifest: Annotated[str, typer.Argument(help="a JSON manifest file, or - for stdin")],
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
    ] = None,
) -> None:
    """Register (or update) every row of the manifest, or none if any row is bad."""
    _, url = settings_for_command(database_url)
    try:
        text = sys.stdin.read() if manifest == "-" else Path(manifest).read_text()
    except OSError as exc:
        errors.print(f"cannot read {manifest}: {exc.strerror}")
        raise typer.Exit(2) from None
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            result = load(conn, read_manifest(text))
    except ManifestError as exc:
        errors.print(f"{exc}:")
        for row_error in exc.errors[:50]:
            errors.print(f"  {row_error}", markup=False)
        if len(exc.errors) > 50:
            errors.print(f"  ... and {len(exc.errors) - 50} more")
        raise typer.Exit(2) from None
    except psycopg.Error as exc:
        errors.print(f"database error: {exc}", markup=False)
        raise typer.Exit(1) from None
    console.print(
        f"registered {result.districts} districts, {result.gateways} gateways, "
        f"{result.sensors} sensors"
    )
