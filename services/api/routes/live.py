"""/live: the built-in live page for operators (KPIs today, open alerts, new readings).

A static page; it asks for an API key and calls /v1 with it, reading the live stream with fetch
(EventSource cannot send a key header). No key is needed to load the page itself.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

router = APIRouter(include_in_schema=False)


@cache
def _page() -> str:
    return files("services.api").joinpath("live.html").read_text(encoding="utf-8")


@router.get("/live", response_class=HTMLResponse)
async def live_page() -> HTMLResponse:
    return HTMLResponse(
        _page(),
        # The page's own script and style only; it talks to this origin alone.
        headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/live")
