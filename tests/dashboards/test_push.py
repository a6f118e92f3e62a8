"""``urbanpulse dashboards push`` against a recording HTTP server.

No Grafana server can run here, so a real HTTP server (``http.server`` in a thread, on
127.0.0.1 and a random port) plays Grafana's side of the HTTP API: it records every request,
answers as Grafana documents (``GET /api/folders/{uid}``, ``POST /api/folders``,
``POST /api/dashboards/db``), and the test checks what grafana-client sent: the bearer token,
the folder, and each dashboard exactly as generated.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from dashboards import build
from dashboards.cli import app
from dashboards.push import FOLDER_UID, PushError, push

# grafana-client may live in an optional extra: without it there is nothing here to test.
pytest.importorskip("grafana_client", reason="grafana-client is not installed")

TOKEN = "glsa_test_token"


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class FakeGrafana:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    folders: set[str] = field(default_factory=set)
    refuse_dashboards: bool = False


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append(
                Recorded(self.command, self.path, self.headers.get("Authorization"), body)
            )
            return body

        def do_GET(self) -> None:
            self._record()
            uid = self.path.removeprefix("/api/folders/")
            if self.path.startswith("/api/folders/") and uid in state.folders:
                self._answer(200, {"uid": uid, "title": "UrbanPulse"})
            else:
                self._answer(404, {"message": "folder not found"})

        def do_POST(self) -> None:
            body = self._record()
            if self.path == "/api/folders":
                state.folders.add(body["uid"])
                self._answer(200, {"uid": body["uid"], "title": body["title"]})
            elif self.path == "/api/dashboards/db" and not state.refuse_dashboards:
                uid = body["dashboard"]["uid"]
                self._answer(
                    200,
                    {"id": 1, "uid": uid, "url": f"/d/{uid}/x", "status": "success", "version": 3},
                )
            else:
                self._answer(403, {"message": "Access denied"})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_push_creates_the_folder_then_saves_every_dashboard(grafana: FakeGrafana) -> None:
    models = build.dashboards()
    pushed = push(grafana.url, TOKEN, models.values())

    assert [p.uid for p in pushed] == list(models)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in grafana.requests)
    calls = [(r.method, r.path) for r in grafana.requests]
    assert calls[:2] == [("GET", f"/api/folders/{FOLDER_UID}"), ("POST", "/api/folders")]
    assert calls[2:] == [("POST", "/api/dashboards/db")] * len(models)
    assert grafana.requests[1].body == {"title": "UrbanPulse", "uid": FOLDER_UID}
    for request, (uid, model) in zip(grafana.requests[2:], models.items(), strict=True):
        assert request.body["folderUid"] == FOLDER_UID
        assert request.body["overwrite"] is True
        assert request.body["dashboard"] == {**model, "id": None}, uid

    # A second push finds the folder and does not create it again.
    grafana.requests.clear()
    push(grafana.url, TOKEN, list(models.values())[:1])
    assert [(r.method, r.path) for r in grafana.requests] == [
        ("GET", f"/api/folders/{FOLDER_UID}"),
        ("POST", "/api/dashboards/db"),
    ]


def test_a_refusal_is_an_error_naming_the_status(grafana: FakeGrafana) -> None:
    grafana.refuse_dashboards = True
    with pytest.raises(PushError) as caught:
        push(grafana.url, TOKEN, build.dashboards().values())
    assert caught.value.status == 403


def test_cli_push_reads_url_and_token_from_settings(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("URBANPULSE_GRAFANA_URL", grafana.url)
    monkeypatch.setenv("URBANPULSE_GRAFANA_TOKEN", TOKEN)
    monkeypatch.setenv("URBANPULSE_ENV_FILE", "/nonexistent")
    result = CliRunner().invoke(app, ["push"])
    assert result.exit_code == 0, result.output
    assert "urbanpulse-city: version 3 /d/urbanpulse-city/x" in result.output
    assert sum(r.path == "/api/dashboards/db" for r in grafana.requests) == len(build.BOARDS)


def test_cli_push_without_settings_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("URBANPULSE_GRAFANA_URL", raising=False)
    monkeypatch.delenv("URBANPULSE_GRAFANA_TOKEN", raising=False)
    monkeypatch.setenv("URBANPULSE_ENV_FILE", "/nonexistent")
    result = CliRunner().invoke(app, ["push"])
    assert result.exit_code == 2
    assert "URBANPULSE_GRAFANA_TOKEN" in result.output


def test_an_absent_grafana_is_an_error_not_a_crash() -> None:
    with pytest.raises(PushError, match="no answer"):
        push("http://127.0.0.1:9", TOKEN, build.dashboards().values(), timeout=2)
