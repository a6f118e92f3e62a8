"""The public city page in Chromium: KPIs of the city and each district with targets, coverage
and trend, no key asked, nothing about single sensors, and thin data said plainly."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import DISTRICTS, Platform, save_screenshot

pytestmark = pytest.mark.slow


def test_the_public_page_shows_kpis_and_nothing_about_sensors(
    open_page: Any, platform: Platform
) -> None:
    watched = open_page(1280, 900)
    page = watched.page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{platform.url}/public")
    page.locator("section[data-scope]").first.wait_for()
    page.select_option("#period", "day")
    page.locator("#updated").filter(has_text="today").wait_for()
    scopes = page.locator("section[data-scope]")
    assert scopes.count() == 1 + len(DISTRICTS)
    city = page.locator('section[data-scope="city"]')
    row = city.locator('tr[data-kpi="AIR-1"]')
    text = row.inner_text()
    assert "ug/m3" in text
    assert "target ≤" in text
    assert "% of expected data" in text
    # Thin data is said so in words, not shown as a value.
    assert page.get_by_text("Not enough data to rate").count() > 0
    content = page.content()
    for sensor_id in platform.sensors:
        assert sensor_id not in content
    assert "latitude" not in content
    # It asked for nothing but its own files and the public endpoint, without a key.
    asked = {r.split(platform.url, 1)[1].split("?")[0] for r in requests}
    assert asked <= {
        "/public",
        "/public/kpis",
        "/console/static/pages.css",
        "/console/static/common.js",
        "/console/static/public.js",
        "/console/static/icon.svg",
    }, asked
    save_screenshot(page, platform.artifacts, "public.png")
    assert watched.errors == [], watched.errors
