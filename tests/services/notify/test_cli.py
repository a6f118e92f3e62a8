"""``urbanpulse notify`` end to end on a real database, through the top-level command."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from services.cli import app
from services.storage import notifications as store

from .conftest import GATEWAY_RULE, Conn, raise_alert


def _run(url: str, *args: str) -> tuple[int, str]:
    runner = CliRunner(env={"COLUMNS": "300"})
    result = runner.invoke(app, ["notify", *args, "--database-url", url])
    # A success is what the command printed; a failure also shows its errors (stderr, where the
    # log records go too).
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_subscriptions_add_list_remove(notify_url: str) -> None:
    code, out = _run(
        notify_url,
        "subscriptions", "add", "--name", "night shift", "--channel", "email",
        "--target", "night@city.example", "--rule", GATEWAY_RULE, "--district", "north",
        "--min-severity", "warning", "--escalate-after", "900",
    )  # fmt: skip
    assert code == 0, out
    assert "subscription 1 added: email night@city.example" in out

    code, out = _run(notify_url, "subscriptions", "list")
    assert code == 0
    assert "night shift" in out
    assert GATEWAY_RULE in out
    assert "900 s" in out

    assert _run(notify_url, "subscriptions", "remove", "1") == (0, "subscription 1 removed\n")
    code, out = _run(notify_url, "subscriptions", "remove", "1")
    assert (code, out.strip()) == (1, "no subscription 1")


def test_a_bad_target_or_rule_is_refused_naming_the_option(notify_url: str) -> None:
    code, out = _run(
        notify_url, "subscriptions", "add", "--name", "x", "--channel", "email", "--target", "x"
    )
    assert code == 2
    assert "--target" in out
    code, out = _run(
        notify_url,
        "subscriptions", "add", "--name", "x", "--channel", "webhook",
        "--target", "https://ops.city.example/h", "--rule", "no-such-rule",
    )  # fmt: skip
    assert code == 2
    assert "--rule:" in out
    assert "no-such-rule" in out


def test_a_webhook_to_a_forbidden_address_is_refused_as_the_api_refuses_it(
    notify_url: str, conn: Conn, monkeypatch: Any
) -> None:
    add = ("subscriptions", "add", "--name", "x", "--channel", "webhook")
    code, out = _run(notify_url, *add, "--target", "http://169.254.169.254/latest/")
    assert code == 2
    assert "--target: a URL webhooks may reach: 169.254.169.254 is a link-local address" in out
    code, out = _run(notify_url, *add, "--target", "http://[::1]:8080/h")
    assert code == 2
    assert "::1 is a loopback address" in out
    assert store.subscriptions(conn) == []

    # The same setting as the notifier's lets the city reach its own network.
    monkeypatch.setenv("URBANPULSE_WEBHOOK_ALLOW_NETWORKS", "169.254.0.0/16")
    code, out = _run(notify_url, *add, "--target", "http://169.254.169.254/latest/")
    assert code == 0, out
    assert [s["target"] for s in store.subscriptions(conn)] == ["http://169.254.169.254/latest/"]


def test_run_once_then_dead_letters_list_and_replay(
    notify_url: str, conn: Conn, monkeypatch: Any
) -> None:
    monkeypatch.setenv("URBANPULSE_NOTIFY_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("URBANPULSE_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    code, out = _run(
        notify_url, "subscriptions", "add", "--name", "x", "--channel", "webhook",
        "--target", "http://127.0.0.1:9/h",
    )  # fmt: skip
    assert code == 0, out
    alert = raise_alert(conn)
    code, out = _run(notify_url, "run", "--once")
    assert (code, out) == (0, "1 enqueued, 0 escalated, 0 sent, 1 failed, 1 dead\n")

    code, out = _run(notify_url, "dead-letters", "list")
    assert code == 0
    assert "unreachable" in out
    [row] = store.notifications_of(conn, alert.id)
    assert _run(notify_url, "dead-letters", "replay", str(row["id"])) == (0, "1 queued again\n")
    [row] = store.notifications_of(conn, alert.id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
