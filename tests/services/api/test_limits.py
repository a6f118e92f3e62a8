"""What one caller may cost the API (issue 11): request bodies, bulk JSON, failed key checks.

Bodies go over real HTTP to uvicorn (a chunked upload is counted as the client hands it over, so
a test can tell a body refused while it streams from one read to the end); key checks run
against the real ``api_keys`` table, with hashlib's own scrypt counted, not replaced.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from services.api.app import create_app
from services.api.auth import CACHE_TTL_S, Authenticator
from services.api.keys import create_key, revoke_key
from services.settings import Settings
from services.storage.urls import libpq_url
from tests.services.api.conftest import auth
from tests.services.api.routes.test_stream import serve

MiB = 1024 * 1024
SENSOR = {"id": "s-limits", "kind": "water_meter"}


class CountingBody:
    """A chunked request body of ``total`` bytes that counts what the client took from it."""

    def __init__(self, total: int, chunk: int = 256 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        piece = b" " * self.chunk
        while self.sent < self.total:
            self.sent += len(piece)
            yield piece


def _post(url: str, body: CountingBody, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/sensors",
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


@pytest.mark.parametrize("key", [None, "nokey.nosecret"])
def test_a_body_without_a_valid_key_is_refused_before_it_is_read(
    api_settings: Settings, key: str | None
) -> None:
    # Far more than the socket buffers between client and server hold, so a server that reads
    # the body (FastAPI does before it runs the key check) makes the client send all of it.
    body = CountingBody(128 * MiB)
    with serve(api_settings) as url:
        response = _post(url, body, auth(key) if key else {})
    _assert_problem(response, 401)
    assert body.sent < 32 * MiB


def test_a_chunked_body_past_the_route_limit_is_413_while_it_streams(
    api_settings: Settings, api_keys: dict[str, str]
) -> None:
    settings = api_settings.model_copy(update={"api_max_body_bytes": 64 * 1024})
    body = CountingBody(128 * MiB)
    with serve(settings) as url:
        response = _post(url, body, auth(api_keys["engineer"]))
        problem = _assert_problem(response, 413)
        assert problem["max_bytes"] == 64 * 1024
        assert "at most 65536 bytes" in problem["detail"]
        assert body.sent < 32 * MiB
        # Under the limit the same route reads its body as before.
        small = httpx.post(f"{url}/v1/sensors", json=SENSOR, headers=auth(api_keys["engineer"]))
        assert small.status_code == 201, small.text


def test_a_declared_length_past_the_limit_is_413_and_bulk_has_its_own(
    api_settings: Settings, api_keys: dict[str, str]
) -> None:
    settings = api_settings.model_copy(
        update={"api_max_body_bytes": 4096, "api_max_body_bytes_bulk": 16 * 1024}
    )
    padded = {**SENSOR, "metadata": {"note": "x" * 8000}}
    manifest = {"sensors": [{**SENSOR, "metadata": {"note": "x" * 8000}}]}
    with TestClient(create_app(settings)) as client:
        engineer = auth(api_keys["engineer"])
        refused = client.post("/v1/sensors", json=padded, headers=engineer)
        assert refused.status_code == 413
        assert refused.json()["max_bytes"] == 4096
        # The bulk route takes the 8 KB manifest (its own limit) and refuses twice its limit.
        assert client.post("/v1/registry/bulk", json=manifest, headers=engineer).status_code == 200
        manifest["sensors"][0]["metadata"] = {"note": "x" * 32_000}
        too_big = client.post("/v1/registry/bulk", json=manifest, headers=engineer)
        assert too_big.status_code == 413
        assert too_big.json()["max_bytes"] == 16 * 1024


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"districts": [{"id": "d", "name": "D", "population": ' + "9" * 5000 + "}]}", "digits"),
        ("[" * 2000 + "]" * 2000, "nested"),
    ],
)
def test_bulk_json_past_the_parsers_limits_is_a_422(
    api_settings: Settings, api_keys: dict[str, str], body: str, why: str
) -> None:
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/registry/bulk",
            content=body,
            headers={"Content-Type": "application/json", **auth(api_keys["engineer"])},
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "body"
    assert why in error["message"]


def _as(address: str) -> httpx.Client:
    """A client calling from ``address`` (any 127.x address is this machine's loopback)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def test_failed_key_checks_are_limited_per_client_and_per_key_id(
    api_settings: Settings, api_keys: dict[str, str]
) -> None:
    settings = api_settings.model_copy(
        update={"api_auth_failures_max": 3, "api_auth_failures_window": timedelta(minutes=5)}
    )
    target = api_keys["operator"]
    target_id = target.partition(".")[0]
    with serve(settings) as url, _as("127.0.0.2") as guesser, _as("127.0.0.3") as other:
        sensors = f"{url}/v1/sensors"
        # The key's holder has been using it: a guesser must not lock it out.
        assert other.get(sensors, headers=auth(target)).status_code == 200
        proven_at = time.monotonic()
        for attempt in range(3):
            wrong = guesser.get(sensors, headers=auth(f"{target_id}.wrong{attempt}"))
            assert wrong.status_code == 401
        # Per client: the guesser is refused whatever id it tries next, before any check.
        refused = guesser.get(sensors, headers=auth("someid.somesecret"))
        problem = _assert_problem(refused, 429)
        assert 0 < int(refused.headers["Retry-After"]) <= 300
        assert problem["retry_after_s"] == int(refused.headers["Retry-After"])
        # Even with a valid key it has not proven to this process yet.
        assert guesser.get(sensors, headers=auth(api_keys["admin"])).status_code == 429
        # Per key id: another address guessing the same id is refused too...
        assert other.get(sensors, headers=auth(f"{target_id}.again")).status_code == 429
        # ...while that address's other keys still work, and so does the holder's proven key
        # once its cache entry is due for a re-check (so that the re-check meets the limiter).
        assert other.get(sensors, headers=auth(api_keys["service"])).status_code == 200
        time.sleep(max(0.0, proven_at + CACHE_TTL_S + 0.5 - time.monotonic()))
        assert other.get(sensors, headers=auth(target)).status_code == 200


def _counting_scrypt(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """hashlib.scrypt, still computing, with the cost parameters of each call recorded."""
    calls: list[dict[str, Any]] = []
    real: Callable[..., bytes] = hashlib.scrypt

    def scrypt(password: bytes, **params: Any) -> bytes:
        calls.append({k: params[k] for k in ("n", "r", "p", "dklen")})
        return real(password, **params)

    monkeypatch.setattr(hashlib, "scrypt", scrypt)
    return calls


def test_an_unknown_key_id_costs_one_scrypt_like_a_wrong_secret(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        known, token = create_key(conn, "timing", "service")
        revoked, revoked_token = create_key(conn, "revoked", "service")
        revoke_key(conn, revoked)
        conn.commit()
    with ConnectionPool(libpq_url(database_url), min_size=1, max_size=2) as pool:
        authenticator = Authenticator(pool)
        assert authenticator.authenticate("warmup.secret") is None  # any one-off set-up cost
        calls = _counting_scrypt(monkeypatch)
        attempts = {
            "unknown id": "doesnotexist.secret",
            "wrong secret": f"{known}.wrong",
            "revoked key": revoked_token,
        }
        costs = {}
        for what, presented in attempts.items():
            calls.clear()
            assert authenticator.authenticate(presented) is None, what
            costs[what] = list(calls)
        calls.clear()
        assert authenticator.authenticate(token) is not None
        real_cost = list(calls)
    # Each refusal paid exactly what verifying the real key did: one scrypt, same parameters.
    assert len(real_cost) == 1
    assert costs == dict.fromkeys(attempts, real_cost)


def test_the_limits_are_in_the_api_description(api_client: TestClient) -> None:
    schema = api_client.get("/openapi.json").json()
    description = schema["info"]["description"]
    for setting in (
        "URBANPULSE_API_MAX_BODY_BYTES",
        "URBANPULSE_API_MAX_BODY_BYTES_BULK",
        "URBANPULSE_API_AUTH_FAILURES_MAX",
    ):
        assert setting in description
    stream = schema["paths"]["/v1/stream"]["get"]
    for setting in (
        "URBANPULSE_API_STREAM_MAX_PER_KEY",
        "URBANPULSE_API_STREAM_MAX",
        "URBANPULSE_API_STREAM_PAGE_READINGS",
        "URBANPULSE_API_STREAM_STALL_TIMEOUT",
        "URBANPULSE_API_STREAM_KEY_RECHECK",
    ):
        assert setting in stream["description"]
    assert {"429", "503"} <= stream["responses"].keys()
