"""The ``urbanpulse`` command.

Each subcommand is a Typer app in its own module, in its package's ``cli/`` folder
(``services/<package>/cli/<command>.py``; the gateway, simulators, dashboards, dataio, notify and
mqtt_identity each keep their one ``cli.py``), imported only when that subcommand runs, so
``urbanpulse gateway`` and ``urbanpulse senml`` work with the gateway extra alone (no SQLAlchemy,
no FastAPI installed) and ``urbanpulse --help`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

# name -> ("module:attribute" of a typer.Typer app, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "gateway": (
        "gateway.cli:app",
        "Run a field gateway: drivers to SenML packs, store-and-forward over MQTT.",
    ),
    "senml": ("gateway.senml_cli:app", "Decode and check SenML packs (the field engineer's tool)."),
    "db": (
        "services.storage.cli.db:app",
        "Apply migrations, show the storage mode, refresh rollups.",
    ),
    "ingest": (
        "services.ingest.cli.ingest:app",
        "Run an ingestion worker: MQTT to the data layer.",
    ),
    "quarantine": (
        "services.ingest.cli.quarantine:app",
        "List, show and replay quarantined messages and records.",
    ),
    "registry": (
        "services.storage.cli.registry:app",
        "Register districts, gateways and sensors from a manifest.",
    ),
    "city": (
        "services.storage.cli.settings:city_app",
        "Show and set the city settings the KPIs use (timezone, peak periods, thresholds).",
    ),
    "district": (
        "services.storage.cli.settings:district_app",
        "Show and set a district's overrides of the city settings.",
    ),
    "mqtt": ("services.mqtt_identity.cli:app", "Broker identities: per-gateway passwords and ACL."),
    "api": ("services.api.cli.api:app", "Serve the HTTP API (FastAPI, under /v1)."),
    "keys": ("services.api.cli.keys:app", "Create, list and revoke API keys."),
    "monitor": (
        "services.kpi.cli.monitor:cli",
        "Keep the current KPI values fresh and evaluate the alert rules, every minute.",
    ),
    "kpi": (
        "services.kpi.cli.kpi:app",
        "Show KPI values, record baselines, set targets, refresh the current values.",
    ),
    "alerts": (
        "services.kpi.cli.alerts:app",
        "List, acknowledge and clear alerts; alert rules; evaluate them.",
    ),
    "notify": (
        "services.notify.cli:app",
        "Alert notifications: run the notifier; webhook and e-mail subscriptions; dead letters.",
    ),
    "dashboards": (
        "dashboards.cli:app",
        "Build the Grafana dashboards' JSON, check it, push it to Grafana.",
    ),
    "up": ("services.devstack.up:app", "Run the platform on this machine (embedded default)."),
    "import": ("services.dataio.cli:import_app", "Import history: CSV, SenML JSON lines, Parquet."),
    "export": ("services.dataio.cli:export_app", "Export open data, a DCAT-AP described bundle."),
    "retention": (
        "services.storage.cli.retention:app",
        "Retention policies: raw readings (days) and rollups (years) per domain, kind, quantity.",
    ),
    "erase": (
        "services.kpi.cli.erase:app",
        "Erase a sensor's raw readings over a range (audited).",
    ),
    "simulate": (
        "simulators.cli:app",
        "Run a simulated city: sensor models publishing through gateways.",
    ),
}


class LazyGroup(TyperGroup):
    """A Typer group whose subcommands are imported when they are looked up."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target[0].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            ours = {"gateway", "services", "simulators", "dashboards"}
            if exc.name and exc.name.split(".")[0] in ours:
                raise
            return typer.main.get_command(_missing_extra(cmd_name, target[1], str(exc.name)))
        command = typer.main.get_command(getattr(module, attribute))
        command.name = cmd_name
        return command


def _missing_extra(name: str, help_text: str, missing: str) -> typer.Typer:
    stub = typer.Typer(help=help_text)

    @stub.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def fail() -> None:
        typer.echo(
            f"`urbanpulse {name}` needs the server extra ({missing} is not installed): "
            "pip install 'urbanpulse[server]'",
            err=True,
        )
        raise typer.Exit(2)

    return stub


app = typer.Typer(
    cls=LazyGroup, name="urbanpulse", no_args_is_help=True, pretty_exceptions_show_locals=False
)


@app.callback()
def _root() -> None:
    """UrbanPulse: a smart sustainable city's sensor platform."""


def main() -> None:
    app(prog_name="urbanpulse")


if __name__ == "__main__":
    main()
