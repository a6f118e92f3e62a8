"""Acknowledge and clear, their refusals, the listing's filters and pages, and their events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.kpi.alerts import (
    Alert,
    AlertNotFound,
    AlertState,
    InvalidArgument,
    InvalidTransition,
    acknowledge,
    clear,
    evaluate,
    get_alert,
    list_alerts,
)

from ..conftest import City
from .conftest import T0, Install, alert_events

MINUTE = timedelta(minutes=1)


def _raise_fires(city: City, install: Install, count: int = 1) -> list[Alert]:
    """``count`` container-fire alerts (bin-1..), raised one minute apart, oldest first."""
    install("waste-fire")
    city.district("d1")
    for n in range(count):
        key = city.sensor(f"bin-{n + 1}", "waste_container", "d1")
        city.write([(key, "temperature", T0 + n * MINUTE, 90.0)])
        evaluate(city.conn, T0 + (n + 1) * MINUTE)
    return list(reversed(list_alerts(city.conn)))


def test_acknowledge_then_clear(city: City, install: Install) -> None:
    db = city.conn
    [alert] = _raise_fires(city, install)
    acked = acknowledge(db, alert.id, "ana", "crew on the way")
    assert (acked.state, acked.acknowledged_by, acked.ack_comment) == (
        AlertState.ACKNOWLEDGED,
        "ana",
        "crew on the way",
    )
    assert acked.acknowledged_at is not None
    assert get_alert(db, alert.id) == acked
    cleared = clear(db, alert.id, "ben", "fire out")
    assert (cleared.state, cleared.cleared_by, cleared.clear_comment) == (
        AlertState.CLEARED,
        "ben",
        "fire out",
    )
    assert cleared.acknowledged_by == "ana"  # the history stays on the alert
    body = cleared.model_dump(mode="json")
    assert body["state"] == "cleared"
    assert body["severity"] == "critical"
    assert [(e[2], e[3], e[4]) for e in alert_events(db)] == [
        ("bin-1", alert.id, "raised"),
        ("bin-1", alert.id, "acknowledged"),
        ("bin-1", alert.id, "cleared"),
    ]


def test_refused_transitions_change_nothing(city: City, install: Install) -> None:
    db = city.conn
    [alert] = _raise_fires(city, install)
    acknowledge(db, alert.id, "ana")
    with pytest.raises(InvalidTransition) as again:
        acknowledge(db, alert.id, "ben")
    assert (again.value.alert_id, again.value.state, again.value.action) == (
        alert.id,
        "acknowledged",
        "acknowledged",
    )
    clear(db, alert.id, "ana")
    with pytest.raises(InvalidTransition, match="is cleared: it cannot be acknowledged"):
        acknowledge(db, alert.id, "ben")
    with pytest.raises(InvalidTransition, match="is cleared: it cannot be cleared"):
        clear(db, alert.id, "ben")
    with pytest.raises(AlertNotFound) as missing:
        clear(db, alert.id + 1000, "ana")
    assert missing.value.alert_id == alert.id + 1000
    with pytest.raises(AlertNotFound):
        get_alert(db, 0)
    with pytest.raises(InvalidArgument, match="by="):
        acknowledge(db, alert.id, "  ")
    assert get_alert(db, alert.id).cleared_by == "ana"
    assert len(alert_events(db)) == 3  # raised, acknowledged, cleared: no event for a refusal


def test_an_acknowledged_alert_clears_by_itself_when_its_condition_ends(
    city: City, install: Install
) -> None:
    db = city.conn
    [alert] = _raise_fires(city, install)
    acknowledge(db, alert.id, "ana")
    key = city.sensors["bin-1"]
    city.write([(key, "temperature", T0 + 5 * MINUTE, 20.0)])
    assert evaluate(db, T0 + 6 * MINUTE).cleared == 1
    done = get_alert(db, alert.id)
    assert (done.state, done.acknowledged_by, done.cleared_by) == ("cleared", "ana", None)


def test_list_filters_and_pages(city: City, install: Install) -> None:
    db = city.conn
    alerts = _raise_fires(city, install, 5)
    install("gateway-silent")
    db.execute("UPDATE gateways SET last_seen = %s", (T0,))
    db.commit()
    evaluate(db, T0 + timedelta(hours=1))
    acknowledge(db, alerts[0].id, "ana")
    clear(db, alerts[1].id, "ana")

    def ids(**filters: object) -> list[int]:
        return [a.id for a in list_alerts(db, **filters)]  # type: ignore[arg-type]

    fires = [a.id for a in alerts]
    gateway = max(ids())
    assert ids() == [gateway, *reversed(fires)]  # newest first
    assert ids(state="open") == [gateway, fires[4], fires[3], fires[2], fires[0]]
    assert ids(state="acknowledged") == [fires[0]]
    assert ids(state="cleared") == [fires[1]]
    assert ids(rule_id="gateway-silent") == [gateway]
    # The gateway carries only waste sensors: its alert is in the waste domain too.
    assert ids(severity="critical", domain="waste") == [gateway, *reversed(fires)]
    assert ids(severity="warning") == ids(domain="energy") == []
    assert ids(district="d1", since=T0 + 3 * MINUTE) == [gateway, fires[4], fires[3], fires[2]]
    assert ids(district="d9") == []
    first_page = ids(limit=2)
    assert first_page == [gateway, fires[4]]
    assert ids(limit=2, after_id=first_page[-1]) == [fires[3], fires[2]]
    for bad in ({"state": "done"}, {"severity": "fatal"}, {"limit": 0}, {"limit": 1001}):
        with pytest.raises(InvalidArgument):
            list_alerts(db, **bad)
