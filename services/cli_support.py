"""What every ``urbanpulse`` command does with its settings: build them, and end the command
with status 2 and the reason on stderr when they are bad or lack a database.

``services.settings`` only raises :class:`~services.settings.SettingsError`; turning it into an
exit belongs to the command line, so the settings stay usable from the API, workers and tests.
"""

from __future__ import annotations

import typer

from services.settings import Settings, SettingsError, load_settings


def command_settings() -> Settings:
    """The settings; a bad value ends the command with status 2, naming each bad variable."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def settings_for_command(database_url: str | None = None) -> tuple[Settings, str]:
    """The settings and the database URL of a command (``--database-url`` wins over the
    environment); a bad or missing value ends the command with status 2 and says which."""
    settings = command_settings()
    url = database_url or settings.database_url
    if not url:
        typer.echo("no database: set URBANPULSE_DATABASE_URL or pass --database-url", err=True)
        raise typer.Exit(2)
    return settings, url
