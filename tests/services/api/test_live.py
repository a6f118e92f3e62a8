"""/live, the built-in page: served without a key, locked to this origin, wired to the API.

The page's script was exercised in headless Chromium against `urbanpulse up` (KPI table filled,
alerts listed, stream connected); here we check what the server controls."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_live_page_is_served_without_a_key(api_client: TestClient) -> None:
    response = api_client.get("/live")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    # The endpoints it reads, with the key in a header (EventSource cannot send one).
    for path in ("/v1/kpis/current?period=day", "/v1/alerts?state=open", "/v1/stream"):
        assert path in page
    assert '"X-API-Key"' in page


def test_the_root_leads_to_the_live_page(api_client: TestClient) -> None:
    response = api_client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/live"


def test_the_page_is_not_part_of_the_api_schema(api_client: TestClient) -> None:
    paths = api_client.get("/openapi.json").json()["paths"]
    assert "/live" not in paths
    assert "/" not in paths
