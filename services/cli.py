"""The ``urbanpulse`` command.

Each subcommand is a Typer app in its own module, imported only when that subcommand runs, so
``urbanpulse gateway`` and ``urbanpulse senml`` work with the gateway extra alone (no SQLAlchemy,
no FastAPI installed) and ``urbanpulse --help`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer.main

# name -> ("module:attribute" of a typer.Typer app, one-line help shown by `urbanpulse --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "senml": ("gateway.senml_cli:app", "Decode and check SenML packs (the field engineer's tool)."),
    "db": ("services.storage.cli:app", "Apply migrations, show the storage mode, refresh rollups."),
    "up": ("services.devstack.up:app", "Run the platform on this machine (embedded default)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they are invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target[0].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            return _missing_extra_command(cmd_name, exc)
        command = typer.main.get_command(getattr(module, attribute))
        command.name = cmd_name
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Describing every subcommand from the table keeps `--help` free of imports.
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _missing_extra_command(name: str, exc: ModuleNotFoundError) -> click.Command:
    def fail(**_: Any) -> None:
        raise click.ClickException(
            f"`urbanpulse {name}` needs the server extra ({exc.name} is not installed): "
            "pip install 'urbanpulse[server]'"
        )

    return click.Command(name, callback=fail, context_settings={"ignore_unknown_options": True},
                         params=[click.Argument(["args"], nargs=-1)])


cli = LazyGroup(name="urbanpulse", help="UrbanPulse: a smart sustainable city's sensor platform.")


def main() -> None:
    cli(prog_name="urbanpulse")
