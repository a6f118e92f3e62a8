"""Shared API fixtures: an app on a fresh migrated database (each storage mode in turn) with the
session's real broker, and one API key per role.

    def test_something(api_client, api_keys):
        response = api_client.get("/v1/sensors", headers={"X-API-Key": api_keys["operator"]})

``api_db`` is a psycopg connection to the same database, for arranging data and checking it.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.keys import ROLES, create_key
from services.settings import Settings
from services.storage.urls import libpq_url
from tests.fixtures.broker import BrokerUnderTest


@pytest.fixture
def api_settings(database_url: str, mqtt_broker: BrokerUnderTest) -> Settings:
    return Settings(database_url=database_url, mqtt_url=mqtt_broker.url, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def api_app(api_settings: Settings) -> FastAPI:
    return create_app(api_settings)


@pytest.fixture
def api_client(api_app: FastAPI) -> Iterator[TestClient]:
    """A client of the app, its lifespan (the pool) running for the test."""
    with TestClient(api_app) as client:
        yield client


@pytest.fixture
def api_keys(database_url: str) -> dict[str, str]:
    """role -> a valid ``<id>.<secret>`` key of that role (operator, engineer, service, admin)."""
    secrets: dict[str, str] = {}
    with psycopg.connect(libpq_url(database_url)) as conn:
        for role in ROLES:
            _, secrets[role] = create_key(conn, f"test {role}", role)
    return secrets


@pytest.fixture
def api_db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection to the API's database (autocommit, so the app sees what a test writes)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}
