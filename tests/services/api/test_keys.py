"""API keys: the hash, create/list/revoke, and the ``urbanpulse keys`` command."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.api.cli.keys import app as keys_app
from services.api.keys import (
    ROLE_PERMISSIONS,
    ApiKeyError,
    create_key,
    hash_secret,
    list_keys,
    revoke_key,
    split_token,
    verify_secret,
)
from tests.services.api.conftest import auth


def test_hash_is_salted_and_verifies() -> None:
    first, second = hash_secret("s3cret"), hash_secret("s3cret")
    assert first != second  # a salt per key
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_secret("s3cret", first)
    assert not verify_secret("s3cret!", first)
    assert not verify_secret("s3cret", "bcrypt$whatever")
    assert not verify_secret("s3cret", "scrypt$x$y$z$not$base64!")


def test_split_token() -> None:
    assert split_token("abc.def.ghi") == ("abc", "def.ghi")
    assert split_token("abc") is None
    assert split_token(".def") is None


def test_roles_grant_what_the_issue_says() -> None:
    assert ROLE_PERMISSIONS["operator"] == {"read", "stream", "alerts:write"}
    assert ROLE_PERMISSIONS["engineer"] == {"read", "stream", "alerts:write", "registry:write"}
    assert ROLE_PERMISSIONS["service"] == {"read", "stream"}
    assert "keys:admin" in ROLE_PERMISSIONS["admin"]


def test_create_list_revoke(db: psycopg.Connection[tuple[object, ...]]) -> None:
    key_id, secret = create_key(db, "utility app", "service")
    assert secret.startswith(key_id + ".")
    stored = db.execute("SELECT secret_hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert stored is not None
    assert secret.split(".", 1)[1] not in str(stored[0])
    [info] = list_keys(db)
    assert (info.id, info.name, info.role, info.revoked_at) == (
        key_id,
        "utility app",
        "service",
        None,
    )
    when = revoke_key(db, key_id)
    assert revoke_key(db, key_id) == when  # revoking twice keeps the first time
    assert list_keys(db, include_revoked=False) == []
    with pytest.raises(ApiKeyError) as excinfo:
        create_key(db, "x", "superuser")
    assert excinfo.value.reason == "unknown-role"
    with pytest.raises(ApiKeyError) as excinfo:
        revoke_key(db, "nope")
    assert excinfo.value.reason == "unknown-key"


def test_cli_create_prints_the_secret_once_and_revoke_bites(
    database_url: str, api_client: TestClient
) -> None:
    runner = CliRunner()
    created = runner.invoke(
        keys_app,
        ["create", "--name", "field team", "--role", "engineer", "--database-url", database_url],
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    key_id = secret.split(".")[0]
    assert api_client.get("/v1/sensors", headers=auth(secret)).status_code == 200

    listed = runner.invoke(keys_app, ["list", "--database-url", database_url])
    assert key_id in listed.stdout
    assert secret.split(".", 1)[1] not in listed.stdout

    revoked = runner.invoke(keys_app, ["revoke", key_id, "--database-url", database_url])
    assert revoked.exit_code == 0, revoked.output
    api_client.app.state.authenticator.forget()  # type: ignore[attr-defined]
    assert api_client.get("/v1/sensors", headers=auth(secret)).status_code == 401

    bad_role = runner.invoke(
        keys_app, ["create", "--name", "x", "--role", "root", "--database-url", database_url]
    )
    assert bad_role.exit_code == 2
    assert (
        runner.invoke(keys_app, ["revoke", "nope", "--database-url", database_url]).exit_code == 1
    )
