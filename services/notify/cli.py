"""``urbanpulse notify``: run the notifier; add, list and remove subscriptions; list and replay
dead letters."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from services import logs
from services.cli_support import settings_for_command
from services.settings import Settings
from services.storage.urls import libpq_url

from . import manage
from .errors import InvalidSubscription, NotifyError
from .notifier import Notifier

app = typer.Typer(help="Alert notifications: webhooks and e-mail.", no_args_is_help=True)
subscriptions_app = typer.Typer(help="Who hears of which alerts.", no_args_is_help=True)
dead_app = typer.Typer(help="Notifications out of attempts.", no_args_is_help=True)
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(dead_app, name="dead-letters")
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]

# Subscription fields whose option is named otherwise (repeated options are singular).
_OPTIONS = {
    "rule_ids": "--rule",
    "district_ids": "--district",
    "transitions": "--transition",
    "escalate_after_s": "--escalate-after",
}


@contextmanager
def _connect(database_url: str | None) -> Iterator[psycopg.Connection[Any]]:
    with _session(database_url) as (_, conn):
        yield conn


@contextmanager
def _session(database_url: str | None) -> Iterator[tuple[Settings, psycopg.Connection[Any]]]:
    """The command's settings and a connection; the notifications errors said as options."""
    settings, url = settings_for_command(database_url)
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            yield settings, conn
    except InvalidSubscription as exc:
        option = _OPTIONS.get(exc.field, "--" + exc.field.replace("_", "-"))
        errors.print(f"[red]{option}: {exc.expected} (got {exc.value!r})")
        raise typer.Exit(2) from None
    except (NotifyError, psycopg.Error) as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@app.command("run")
def run(
    database_url: DatabaseOption = None,
    once: Annotated[bool, typer.Option(help="one pass, then exit")] = False,
) -> None:
    """Deliver alert transitions to the subscriptions, every URBANPULSE_NOTIFY_INTERVAL."""
    settings, url = settings_for_command(database_url)
    logs.configure(settings.log_level, settings.log_format.value)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        notifier = Notifier(conn, manage.config_from(settings))
        if once:
            result = notifier.run_once()
            console.print(
                f"{result.enqueued} enqueued, {result.escalated} escalated, {result.sent} sent, "
                f"{result.failed} failed, {result.dead} dead"
            )
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        notifier.run(stop, settings.notify_interval.total_seconds())


@subscriptions_app.command("add")
def add(  # noqa: PLR0917 - typer maps options to parameters
    name: Annotated[str, typer.Option(help="what the subscription is for")],
    channel: Annotated[str, typer.Option(help="webhook or email")],
    target: Annotated[str, typer.Option(help="the webhook URL or the e-mail address")],
    rule: Annotated[list[str] | None, typer.Option(help="a rule id (repeat); none: all")] = None,
    district: Annotated[
        list[str] | None, typer.Option(help="a district id (repeat); none: all")
    ] = None,
    min_severity: Annotated[str, typer.Option(help="info, warning or critical")] = "info",
    transition: Annotated[
        list[str] | None, typer.Option(help="raised, acknowledged, cleared (repeat); none: all")
    ] = None,
    escalate_after: Annotated[
        float | None, typer.Option(help="seconds unacknowledged before an escalation")
    ] = None,
    escalate_to: Annotated[str | None, typer.Option(help="where escalations go")] = None,
    secret: Annotated[str | None, typer.Option(help="webhook HMAC key; default: random")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Subscribe a webhook or an e-mail address to alerts; prints the webhook's secret once."""
    with _session(database_url) as (settings, conn):
        sub = manage.add_subscription(
            conn,
            {
                "name": name,
                "channel": channel,
                "target": target,
                "rule_ids": rule or None,
                "district_ids": district or None,
                "min_severity": min_severity,
                "transitions": transition or None,
                "escalate_after_s": escalate_after,
                "escalate_to": escalate_to,
                "secret": secret,
            },
            egress=manage.egress_of(settings),
        )
    console.print(f"subscription {sub.id} added: {sub.channel} {sub.target}")
    if sub.secret:
        console.print(f"secret (verify X-UrbanPulse-Signature with it): {sub.secret}")


@subscriptions_app.command("list")
def list_(database_url: DatabaseOption = None) -> None:
    """Every subscription."""
    with _connect(database_url) as conn:
        rows = manage.list_subscriptions(conn)
    table = Table("id", "name", "channel", "target", "rules", "districts", "severity ≥", "escalate")
    for sub in rows:
        table.add_row(
            str(sub.id),
            sub.name,
            sub.channel,
            sub.target,
            ", ".join(sub.rule_ids or ["all"]),
            ", ".join(sub.district_ids or ["all"]),
            sub.min_severity,
            "" if sub.escalate_after_s is None else f"{sub.escalate_after_s:g} s",
        )
    console.print(table)


@subscriptions_app.command("remove")
def remove(id: int, database_url: DatabaseOption = None) -> None:
    """Remove a subscription (and its pending and dead notifications)."""
    with _connect(database_url) as conn:
        manage.remove_subscription(conn, id)
    console.print(f"subscription {id} removed")


@dead_app.command("list")
def dead_list(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Dead letters, newest first."""
    with _connect(database_url) as conn:
        rows = manage.dead_letters(conn, limit)
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    table = Table("id", "alert", "transition", "subscription", "target", "attempts", "last error")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["alert_id"]),
            row["transition"],
            str(row["subscription_id"]),
            row["target"],
            str(row["attempts"]),
            row["last_error"] or "",
        )
    console.print(table)


@dead_app.command("replay")
def dead_replay(ids: list[int], database_url: DatabaseOption = None) -> None:
    """Queue dead letters again; the notifier's next pass sends them."""
    with _connect(database_url) as conn:
        for id in ids:
            manage.replay(conn, id)
    console.print(f"{len(ids)} queued again")
