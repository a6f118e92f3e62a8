"""``/docs`` serves Swagger UI from the package, pinned, with headers that keep the page to its
own origin (issue 11: it loaded Swagger UI from a CDN, unpinned, next to an operator's key)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from services.api.docs import STATIC

# The vendored files of swagger-ui-dist 5.35.0 (services/api/static/README.md), as npm packed
# them: a changed file must come with a changed pin.
PINNED = {
    "swagger-ui/swagger-ui-bundle.js": (
        "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2"
    ),
    "swagger-ui/swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
    "swagger-ui/favicon-32x32.png": (
        "3ed612f41e050ca5e7000cad6f1cbe7e7da39f65fca99c02e99e6591056e5837"
    ),
    "swagger-ui/LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    "swagger-ui/NOTICE": "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.links.extend(v for k, v in found.items() if k in ("src", "href") and v)
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def _check_headers(headers: Mapping[str, str]) -> None:
    policy = headers.get("content-security-policy", "")
    assert "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert "http" not in policy  # no other origin anywhere
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("x-content-type-options") == "nosniff"


def test_docs_load_only_files_of_the_api_itself(api_client: TestClient) -> None:
    page = api_client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    _check_headers(page.headers)
    parsed = _Links()
    parsed.feed(page.text)
    assert parsed.inline_scripts == 0  # what the policy would block anyway
    assert len(parsed.links) == 4
    for link in parsed.links:
        assert link.startswith("/docs/static/"), link
        asset = api_client.get(link)
        assert asset.status_code == 200, link
        _check_headers(asset.headers)
        name = link.removeprefix("/docs/static/")
        assert asset.content == (STATIC / name).read_bytes()
        if name in PINNED:
            assert hashlib.sha256(asset.content).hexdigest() == PINNED[name]
    assert 'data-openapi-url="/openapi.json"' in page.text
    assert api_client.get("/openapi.json").status_code == 200


def test_the_vendored_files_are_the_pinned_ones_with_their_licence() -> None:
    for name, digest in PINNED.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    readme = (STATIC / "README.md").read_text()
    assert "swagger-ui-dist 5.35.0" in readme
    assert "Apache License 2.0" in readme


@pytest.mark.parametrize("path", ["/redoc", "/docs/oauth2-redirect", "/docs/static/nothing.js"])
def test_nothing_else_is_served_around_the_docs(api_client: TestClient, path: str) -> None:
    assert api_client.get(path).status_code == 404
