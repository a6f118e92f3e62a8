"""``urbanpulse alerts``: list, show, acknowledge and clear alerts; list rules, install the default
rules, and evaluate them once or in a loop."""

from __future__ import annotations

import getpass
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from services.cli_support import settings_for_command
from services.storage.urls import libpq_url

from .. import alerts
from ..alerts import Alert, AlertError

app = typer.Typer(
    help="Alerts: list, show, acknowledge, clear; rules; evaluation.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]
ByOption = Annotated[str | None, typer.Option("--by", help="who acts (default: the OS user)")]
CommentOption = Annotated[str | None, typer.Option("--comment", "-m")]

_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


@contextmanager
def _connect(database_url: str | None) -> Iterator[psycopg.Connection[Any]]:
    _, url = settings_for_command(database_url)
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            yield conn
    except (AlertError, psycopg.Error) as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


@app.command("list")
def list_(  # noqa: PLR0917 - typer maps options to parameters
    state: Annotated[
        str, typer.Option(help="open, raised, acknowledged, cleared, or all")
    ] = "open",
    severity: Annotated[str | None, typer.Option(help="info, warning, critical")] = None,
    district: Annotated[str | None, typer.Option()] = None,
    domain: Annotated[str | None, typer.Option()] = None,
    rule: Annotated[str | None, typer.Option(help="a rule id")] = None,
    since: Annotated[datetime | None, typer.Option(help="raised at or after")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    database_url: DatabaseOption = None,
) -> None:
    """List alerts, newest first."""
    with _connect(database_url) as conn:
        found = alerts.list_alerts(
            conn,
            state=None if state == "all" else state,
            severity=severity,
            district=district,
            domain=domain,
            rule_id=rule,
            since=since,
            limit=limit,
        )
    table = Table("id", "state", "severity", "raised", "rule", "subject", "district", "message")
    for a in found:
        table.add_row(
            str(a.id),
            a.state,
            f"[{_STYLE[a.severity]}]{a.severity}[/]",
            _when(a.raised_at),
            a.rule_id,
            a.subject_id,
            a.district_id or "",
            a.message,
        )
    console.print(table)


def _show(alert: Alert) -> None:
    table = Table(show_header=False, box=None)
    for name, value in alert.model_dump().items():
        shown = _when(value) if isinstance(value, datetime) else value
        table.add_row(name, "" if shown is None else str(shown))
    console.print(table)


@app.command()
def show(alert_id: int, database_url: DatabaseOption = None) -> None:
    """Show one alert."""
    with _connect(database_url) as conn:
        _show(alerts.get_alert(conn, alert_id))


@app.command()
def ack(
    alert_id: int,
    by: ByOption = None,
    comment: CommentOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Acknowledge a raised alert."""
    with _connect(database_url) as conn:
        _show(alerts.acknowledge(conn, alert_id, by or getpass.getuser(), comment))


@app.command()
def clear(
    alert_id: int,
    by: ByOption = None,
    comment: CommentOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Clear an open alert by hand (it is raised anew if its condition still holds)."""
    with _connect(database_url) as conn:
        _show(alerts.clear(conn, alert_id, by or getpass.getuser(), comment))


def _limits(rule: alerts.Rule) -> str:
    if rule.condition == "outside":
        return f"{rule.params['low']:g} .. {rule.params['high']:g}"
    if rule.threshold is None:
        return ", ".join(f"{k}={v}" for k, v in rule.params.items())
    return f"{rule.threshold:g} (clear {rule.clear_threshold:g})"


@app.command()
def rules(
    all_: Annotated[bool, typer.Option("--all", help="disabled rules too")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """List the alert rules."""
    with _connect(database_url) as conn:
        found = alerts.load_rules(conn, enabled=None if all_ else True)
    table = Table("id", "on", "severity", "watches", "condition", "limits", "for", "district")
    for r in found:
        watches = r.kpi_id or "/".join(x for x in (r.kind, r.quantity) if x) or r.subject
        table.add_row(
            r.id,
            "yes" if r.enabled else "no",
            f"[{_STYLE[r.severity]}]{r.severity}[/]",
            watches,
            r.condition,
            _limits(r),
            f"{r.duration_s:g} s" if r.duration_s else "",
            r.district_id or "",
        )
    console.print(table)


@app.command("install-defaults")
def install_defaults(
    reset: Annotated[bool, typer.Option(help="put edited default rules back as shipped")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Install the default rules (idempotent; keeps a city's edits unless --reset)."""
    with _connect(database_url) as conn:
        result = alerts.install_defaults(conn, reset=reset)
    console.print(
        f"default rules: {len(result.inserted)} installed, {len(result.reset)} reset, "
        f"{len(result.kept)} kept as edited"
    )


@app.command()
def evaluate(
    loop: Annotated[
        float | None, typer.Option(help="evaluate every SECONDS until interrupted", min=1.0)
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Evaluate every enabled rule now (or in a loop); print what changed."""
    stop = threading.Event()
    if loop is not None:
        # SIGTERM (a service manager stopping us) ends the loop between two evaluations.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _connect(database_url) as conn:
        while True:
            started = time.monotonic()
            result = alerts.evaluate(conn)
            line = (
                f"{datetime.now():%H:%M:%S} rules {result.rules}: raised {result.raised}, "
                f"cleared {result.cleared}, open {result.open}, pending {result.pending}"
            )
            if result.invalid_rules:
                line += f"; [red]invalid rules skipped: {', '.join(result.invalid_rules)}[/red]"
            console.print(line)
            if loop is None:
                return
            try:
                if stop.wait(max(0.0, loop - (time.monotonic() - started))):
                    return
            except KeyboardInterrupt:
                return
