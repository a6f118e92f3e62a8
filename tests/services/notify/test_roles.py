"""The notifier under the monitor's least-privilege role, subscriptions under the API's
(migration 0010 grants them what they need, as deploy/ runs them)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from services.cli import app
from services.kpi.alerts import upsert_rule
from services.notify import manage
from services.storage.urls import libpq_url
from tests.deploy import test_roles as deploy_roles

from .conftest import GATEWAY_RULE, LOOPBACK, RULES, raise_alert

login = deploy_roles.login


def test_the_api_subscribes_and_the_monitor_role_notifies(
    database_url: str, login: Any, receiver_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("URBANPULSE_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    receiver = receiver_factory()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as owner:
        upsert_rule(owner, RULES[GATEWAY_RULE])
    with psycopg.connect(libpq_url(login("urbanpulse_api")), autocommit=True) as api:
        sub = manage.add_subscription(
            api, {"name": "ops", "channel": "webhook", "target": receiver.url}, egress=LOOPBACK
        )
    receiver.secret = sub.secret
    with psycopg.connect(libpq_url(database_url), autocommit=True) as owner:
        alert = raise_alert(owner)

    monitor_url = login("urbanpulse_monitor")
    result = CliRunner().invoke(app, ["notify", "run", "--once", "--database-url", monitor_url])

    assert result.exit_code == 0, result.output
    assert [(r.json["alert"]["id"], r.verified) for r in receiver.requests] == [(alert.id, True)]
