"""The operator console in Chromium against a running platform: it loads and fills the map and
the tiles, shows a reading published over MQTT, acknowledges an alert in the API, keeps to its
CSP, reconnects its stream with Last-Event-ID and says when it is stale, forgets its key, and
fits a 1920x1080 wall in kiosk mode."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import pytest

from gateway import topics
from gateway.senml import Record, encode
from tests.browser.conftest import (
    CHARTED,
    DISTRICTS,
    Platform,
    Watched,
    alert,
    save_screenshot,
)
from tests.fixtures.broker import BrokerUnderTest, MqttConnect

pytestmark = pytest.mark.slow


def _console(
    open_page: Any,
    platform: Platform,
    role: str = "operator",
    query: str = "",
    width: int = 1440,
    height: int = 900,
) -> Watched:
    watched: Watched = open_page(width, height)
    watched.page.goto(f"{platform.url}/console{query}#key={platform.keys[role]}")
    watched.page.wait_for_selector(".tile")
    return watched


def test_the_console_loads_and_fills_the_map_and_tiles(open_page: Any, platform: Platform) -> None:
    watched = _console(open_page, platform)
    page = watched.page
    page.wait_for_function(
        "n => document.querySelectorAll('#map circle.sensor').length === n",
        arg=len(platform.sensors),
    )
    assert page.locator("#map .district").count() == len(DISTRICTS)
    # Riverside has no boundary in the registry: drawn from its sensors, and said to be.
    riverside = page.locator('#map .district[data-district="d4"]')
    assert "approximate" in (riverside.get_attribute("class") or "")
    assert "no boundary in the registry" in (riverside.get_attribute("aria-label") or "")
    # Every marker has a text alternative; Riverside's gateway is offline, in words too.
    assert page.locator("#map circle.sensor:not([aria-label])").count() == 0
    offline = page.locator('#map rect.gateway[data-gateway="gw-d4"]')
    assert "offline" in (offline.get_attribute("class") or "")
    assert "offline" in (offline.get_attribute("aria-label") or "")
    # The city's tiles: value, unit, band, rating in words, coverage and baseline change.
    tile = page.locator('.tile[data-kpi="AIR-1"]')
    assert re.search(r"\d", tile.locator(".value").inner_text())
    assert "ug/m3" in tile.inner_text()
    assert "target ≤" in tile.locator(".band").inner_text()
    assert tile.locator(".rating").inner_text().strip()[1:].strip() in {"met", "warning", "missed"}
    assert "% coverage" in tile.locator(".coverage").inner_text()
    assert "baseline" in tile.locator(".change").inner_text()
    page.wait_for_selector('.tile[data-kpi="AIR-1"] svg.spark path')
    page.locator("#gateway-count").filter(has_text="3 of 4 online").wait_for()
    page.locator("#freshness").filter(has_text="live").wait_for()
    # The key left the address bar (the fragment) and lives in this tab's session only.
    assert "#key=" not in page.url
    assert page.evaluate("sessionStorage.getItem('urbanpulse-key')") == platform.keys["operator"]
    assert page.evaluate("localStorage.getItem('urbanpulse-key')") is None
    save_screenshot(page, platform.artifacts, "console.png", full_page=True)
    assert watched.errors == [], watched.errors


def test_a_district_and_a_sensor_are_reachable_by_keyboard(
    open_page: Any, platform: Platform
) -> None:
    page = _console(open_page, platform).page
    page.focus('#map .district[data-district="d2"]')
    page.keyboard.press("Enter")
    assert page.locator("#scope").input_value() == "d2"
    page.wait_for_selector('.tile[data-kpi="AIR-1"]')
    page.focus('#map circle[data-sensor="air-d2-1"]')
    page.keyboard.press("Enter")
    panel = page.locator("#sensor-panel")
    panel.locator("tbody tr").first.wait_for()
    assert panel.is_visible()
    assert "Sensor air-d2-1" in page.locator("#sensor-title").inner_text()
    rows = panel.locator("tbody tr").all_inner_texts()
    assert any(r.startswith("pm25") and "ug/m3" in r for r in rows), rows
    assert panel.locator("svg.spark path").count() >= 1


def test_a_reading_published_over_mqtt_appears_on_the_page(
    open_page: Any,
    platform: Platform,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    page = _console(open_page, platform, query="?domain=environment").page
    page.locator("#freshness").filter(has_text="live").wait_for()
    gateway = mqtt_connect(mqtt_broker)
    pack = encode([Record(name="air-d3-1/pm25", time=time.time(), unit="ug/m3", value=77.7)])
    gateway.client.publish(topics.up_topic("gw-d3"), pack, qos=1).wait_for_publish(10)
    chart = page.locator('.chart-box[data-domain="environment"] .chart-text')
    chart.filter(has_text="newest per-minute mean 77.7 ug/m3").wait_for()
    # The sensor heard from is marked on the map.
    page.wait_for_selector('#map circle[data-sensor="air-d3-1"].reporting')
    # The domain view shows the environment only.
    assert page.locator(".chart-box").count() == 1
    assert set(page.locator(".tile .domain").all_inner_texts()) == {"environment"}
    save_screenshot(page, platform.artifacts, "console-environment.png", full_page=True)


def test_an_alert_acknowledged_on_the_page_is_acknowledged_in_the_api(
    open_page: Any, platform: Platform
) -> None:
    page = _console(open_page, platform).page
    item = page.locator(f'#alerts li[data-alert-id="{platform.alert_id}"]')
    item.locator('button[data-action="acknowledge"]').click()
    dialog = page.locator("#action-dialog")
    assert dialog.is_visible()
    # An empty comment is refused on the page; the dialog says what to write.
    dialog.locator("#action-ok").click()
    assert dialog.is_visible()
    page.fill("#action-comment", "crew sent to Harbour station")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the Acknowledge button, by keyboard
    item.filter(has_text="acknowledged by browser operator").wait_for()
    alert = httpx.get(
        f"{platform.url}/v1/alerts/{platform.alert_id}",
        headers={"X-API-Key": platform.keys["operator"]},
    ).json()
    assert alert["state"] == "acknowledged"
    assert alert["ack_comment"] == "crew sent to Harbour station"
    assert alert["acknowledged_by"].startswith("browser operator")


HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def test_a_role_that_may_not_act_on_alerts_gets_no_buttons(
    open_page: Any, platform: Platform
) -> None:
    page = _console(open_page, platform, role="service").page
    page.locator(f'#alerts li[data-alert-id="{platform.alert_id}"]').wait_for()
    assert page.locator("#alerts button").count() == 0
    assert "(service)" in page.locator("#who").inner_text()


def test_markup_in_data_is_shown_as_text_and_never_runs(open_page: Any, platform: Platform) -> None:
    with platform.connect() as conn:
        hostile = alert(conn, "noise-d1-1", HOSTILE)
    try:
        watched = _console(open_page, platform)
        page = watched.page
        item = page.locator(f'#alerts li[data-alert-id="{hostile}"] .message')
        assert item.inner_text() == HOSTILE
        assert page.evaluate("window.pwned") is None
        assert page.locator("#alerts img, #alerts script").count() == 0
    finally:
        response = httpx.post(
            f"{platform.url}/v1/alerts/{hostile}/clear",
            headers={"X-API-Key": platform.keys["operator"]},
            json={"comment": "test data"},
        )
        assert response.status_code == 200, response.text


def test_the_console_cannot_be_framed_by_another_site(open_page: Any, platform: Platform) -> None:
    page = open_page().page
    # Refused by frame-ancestors 'none' / X-Frame-Options DENY, as Chromium says in the console.
    with page.expect_console_message(
        lambda m: "frame-ancestors 'none'" in m.text or "X-Frame-Options" in m.text
    ):
        page.set_content(f'<iframe id="f" src="{platform.url}/console" width="800" height="600">')
    # set_content waited for the load event, which waits for the frame's document: refused,
    # the frame holds Chromium's error page and nothing of the console.
    frame = page.locator("#f").element_handle().content_frame()
    assert frame is not None
    assert frame.url.startswith("chrome-error://"), frame.url
    assert page.frame_locator("#f").locator("#keyform").count() == 0


class _StreamGate:
    """Answers the page's stream requests in order, each once the test releases it (those past
    ``answers`` go on to the API), so what the page shows between two requests holds until the
    test has seen it. Answered at once, the cut stream's first instant (headers in, body not yet
    read) says "live", which a loaded machine catches, and "STALE" is said before the first
    stream is even asked for: waits for those prove nothing about the reconnect."""

    def __init__(self, *answers: Callable[[Any], None]) -> None:
        self.answers = answers
        self.headers: list[dict[str, str]] = []
        self._waiting: list[Any] = []
        self._released = 0
        self._answered = 0

    def take(self, route: Any) -> None:
        self.headers.append(route.request.headers)
        self._waiting.append(route)
        self._answer()

    def release(self) -> None:
        self._released += 1
        self._answer()

    def _answer(self) -> None:
        # Route handlers and the test run on one thread (Playwright's sync API): no lock.
        while self._answered < min(self._released, len(self._waiting)):
            route = self._waiting[self._answered]
            if self._answered < len(self.answers):
                self.answers[self._answered](route)
            else:
                route.continue_()
            self._answered += 1


def test_the_stream_reconnects_with_last_event_id_and_the_page_says_it_was_stale(
    open_page: Any, platform: Platform
) -> None:
    watched: Watched = open_page()
    page = watched.page
    event: dict[str, list[Any]] = {"readings": []}

    def cut(route: Any) -> None:
        # One message with an id, then the connection ends (a proxy cut it).
        body = f"id: 41\nevent: readings\ndata: {json.dumps(event)}\n\n"
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    def restarting(route: Any) -> None:
        route.fulfill(
            status=503,
            headers={"content-type": "application/problem+json"},
            body=json.dumps({"detail": "API restarting"}),
        )

    gate = _StreamGate(cut, restarting)
    page.route("**/v1/stream", gate.take)
    page.goto(f"{platform.url}/console#key={platform.keys['operator']}")
    stale = page.locator("#freshness.stale")
    # Each wait is for a state that holds until the next stream request is answered, and the
    # page backs off before it asks again (1 s, then 2 s): generous time, no fixed window.
    gate.release()
    stale.filter(has_text="STALE: stream disconnected (the stream ended)").wait_for(timeout=30000)
    gate.release()
    stale.filter(has_text="STALE: stream disconnected (API restarting)").wait_for(timeout=30000)
    gate.release()
    page.locator("#freshness.fresh").filter(has_text="live").wait_for(timeout=30000)
    assert len(gate.headers) >= 3
    assert "last-event-id" not in gate.headers[0]
    assert gate.headers[1].get("last-event-id") == "41"
    assert gate.headers[2].get("last-event-id") == "41"


def test_forget_key_clears_the_key_and_the_data(open_page: Any, platform: Platform) -> None:
    page = _console(open_page, platform).page
    page.click("#forget")
    assert page.evaluate("sessionStorage.getItem('urbanpulse-key')") is None
    assert page.locator("#key").input_value() == ""
    assert page.locator(".tile").count() == 0
    assert page.locator("#alerts li[data-alert-id]").count() == 0
    assert "no key" in page.locator("#freshness").inner_text()
    page.reload()
    # With a key left behind the page would connect and never say this; once it has, nothing
    # can fill the tiles (a sleep here passed whenever the machine was slower than it).
    page.locator("#freshness").filter(has_text="no key: enter an API key").wait_for()
    assert page.evaluate("sessionStorage.getItem('urbanpulse-key')") is None
    assert page.locator(".tile").count() == 0


def test_kiosk_mode_fills_a_wall_screen_without_clicks(
    open_page: Any,
    platform: Platform,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    watched = _console(open_page, platform, query="?kiosk=1", width=1920, height=1080)
    page = watched.page
    page.locator("#freshness").filter(has_text="live").wait_for()
    # The last quarter hour of each domain's charted quantity, as gateways would send it late.
    gateway = mqtt_connect(mqtt_broker)
    now = time.time()
    for district in ("d1", "d2", "d3"):
        records = [
            Record(
                name=f"{prefix}-{district}-1/{quantity}",
                time=now - 60 * (15 - minute),
                unit=unit,
                value=level * (1 + 0.2 * math.sin(minute / 2 + int(district[1]))),
            )
            for prefix, quantity, unit, level in CHARTED.values()
            for minute in range(16)
        ]
        info = gateway.client.publish(topics.up_topic(f"gw-{district}"), encode(records), qos=1)
        info.wait_for_publish(10)
    page.wait_for_function(
        "n => document.querySelectorAll('.chart-box svg path').length === n", arg=len(CHARTED)
    )
    page.wait_for_function("document.querySelectorAll('#map circle.sensor').length > 0")
    page.wait_for_selector('.tile[data-kpi="AIR-1"] svg.spark path')
    assert not page.locator("#keyform").first.is_visible()
    assert not page.locator("#forget").is_visible()
    assert (
        page.locator("#alerts button").count() == 0
        or not page.locator("#alerts button").first.is_visible()
    )
    # The wall shows everything at once: nothing below the fold.
    save_screenshot(page, platform.artifacts, "console-wall-1920x1080.png")
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height <= 1080, height
    assert watched.errors == [], watched.errors


def test_kpis_the_monitor_stopped_refreshing_are_shown_stale(
    open_page: Any, platform: Platform
) -> None:
    with platform.connect() as conn:
        conn.execute("UPDATE kpi_current SET computed_at = computed_at - interval '20 minutes'")
    try:
        page = _console(open_page, platform).page
        stale = page.locator("#freshness.stale")
        # At least 20 minutes old (more by the time since the platform's monitor round).
        stale.filter(has_text=re.compile(r"KPIs STALE, computed (2\d|[3-9]\d) min ago")).wait_for()
        assert "is-stale" in (page.locator("body").get_attribute("class") or "")
    finally:
        with platform.connect() as conn:
            conn.execute("UPDATE kpi_current SET computed_at = computed_at + interval '20 minutes'")


def test_quarantined_input_is_counted_on_the_page(
    open_page: Any,
    platform: Platform,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    gateway = mqtt_connect(mqtt_broker)
    # A DMA inflow of 99 m3/s is outside the kind's bounds (0 to 2): quarantined, not stored.
    pack = encode([Record(name="water-d2-1/flow", time=time.time(), unit="m3/s", value=99.0)])
    gateway.client.publish(topics.up_topic("gw-d2"), pack, qos=1).wait_for_publish(10)
    headers = {"X-API-Key": platform.keys["operator"]}
    deadline = time.monotonic() + 20
    while True:
        summary = httpx.get(f"{platform.url}/v1/quarantine/summary", headers=headers).json()
        if summary["total"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert summary["total"] >= 1
    reason = summary["reasons"][0]
    page = _console(open_page, platform).page
    page.locator("#quarantine-total").filter(has_text=f"({summary['total']})").wait_for()
    shown = page.locator("#quarantine li").first.inner_text()
    assert shown == f"{reason['count']} {reason['reason'].replace('_', ' ')}"
