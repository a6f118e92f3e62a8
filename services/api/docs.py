"""``/docs``: Swagger UI served from the package (``static/``), with headers that keep it there.

FastAPI's own page loads Swagger UI from a CDN, unpinned and without integrity, so whoever
controls the CDN runs script next to an operator's API key (issue 11). This page loads only
files of the API's own origin, vendored and pinned in ``static/swagger-ui`` (its README says
from where, and the licence), and says so to the browser: a Content-Security-Policy allowing
scripts from the origin only, and no framing. ReDoc is not served.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
SWAGGER_UI_VERSION = "5.35.0"
ASSETS = "/docs/static"

# Swagger UI sets inline styles from its React components (hence 'unsafe-inline' for styles
# only) and draws icons as data: URIs; the schema and "Try it out" are fetched from the origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{assets}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{assets}/docs.js"></script>
</body>
</html>
"""


class _Assets(StaticFiles):
    """The vendored files, with the page's headers (a script is a document's code too)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets on ``app`` (built with ``docs_url=None``)."""
    if app.openapi_url is None:
        return

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = escape(str(request.scope.get("root_path", "")), quote=True)
        page = _PAGE.format(
            title=escape(app.title),
            assets=root + ASSETS,
            openapi_url=root + escape(str(app.openapi_url), quote=True),
        )
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    app.mount(ASSETS, _Assets(directory=STATIC), name="docs-static")
