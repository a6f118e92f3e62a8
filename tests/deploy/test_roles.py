"""The least-privilege roles of migration 0006, on the real PostgreSQL (and TimescaleDB where
offered): each service runs under a login in its group role and does its work, and what it
must not do is refused by the server.

Each test makes login users for the group roles (as deploy/postgres/initdb/10-roles.sh does in
production) and drops them afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from psycopg import sql
from typer.testing import CliRunner

from gateway import topics
from gateway.kinds import QUANTITIES
from gateway.senml import Record, encode
from services.api.app import create_app
from services.api.keys import create_key
from services.cli import app as cli
from services.devstack.postgres import EmbeddedPostgres, _wheel_paths
from services.ingest.worker import IngestWorker, WorkerConfig
from services.kpi.alerts.defaults import install_defaults
from services.settings import Settings
from services.storage import migrate, partitions, retention, rollups
from services.storage.migrate import _alembic_config
from services.storage.retention_policy import make_policy
from services.storage.roles import OWNER
from services.storage.urls import libpq_url, sqlalchemy_url, with_database
from services.storage.writer import ReadingWriter
from tests.dashboards.panel_queries import refused_queries
from tests.fixtures.broker import BrokerUnderTest, MqttConnect, require

from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
INITDB = ROOT / "deploy" / "postgres" / "initdb"


class Login(Protocol):
    def __call__(self, group: str, on: str | None = None) -> str: ...


def _new_login(
    conn: psycopg.Connection[Any], url: str, prefix: str, group: str | None = None
) -> tuple[str, str]:
    """A new login role (in ``group`` when given): its name and ``url`` with its credentials."""
    name = f"t_{prefix}_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(12)
    statement = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
        sql.Identifier(name), sql.Literal(password)
    )
    if group is not None:
        statement += sql.SQL(" IN ROLE {}").format(sql.Identifier(group))
    conn.execute(statement)
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return name, urlunsplit(parts._replace(netloc=f"{name}:{password}@{host}"))


@pytest.fixture
def login(database_url: str) -> Iterator[Login]:
    """``login("urbanpulse_api")`` -> the database URL of a new login in that group role (on
    ``database_url``'s database, or the one of the URL given second)."""
    made: list[tuple[str, str]] = []

    def make(group: str, on: str | None = None) -> str:
        target = on or database_url
        with psycopg.connect(libpq_url(target), autocommit=True) as conn:
            name, url = _new_login(conn, target, group.removeprefix("urbanpulse_"), group)
        made.append((target, name))
        return url

    yield make
    for target, name in made:
        with psycopg.connect(libpq_url(target), autocommit=True) as conn:
            role = sql.Identifier(name)
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE {}").format(role))


def _refused(url: str, statement: str) -> bool:
    with psycopg.connect(libpq_url(url)) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
        conn.rollback()
    return False


def _allowed(url: str, statement: str) -> None:
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(statement)
        conn.rollback()  # a check, not a change


def _arrange(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("INSERT INTO districts (id, name) VALUES ('d01', 'North')")
        conn.execute("INSERT INTO gateways (id, district_id) VALUES ('gw-a', 'd01')")
        conn.execute(
            "INSERT INTO sensors (id, kind, domain, gateway_id, district_id) "
            "VALUES ('fdr-1', 'feeder_meter', 'energy', 'gw-a', 'd01')"
        )
        conn.execute(
            "WITH m AS (INSERT INTO quarantine_messages (received_at, topic, bytes, payload) "
            "VALUES (now(), 'ssc/v1/gw-a/up', 12, 'secret bytes') RETURNING id, received_at) "
            "INSERT INTO quarantine (received_at, topic, reason, message_id) "
            "SELECT received_at, 'ssc/v1/gw-a/up', 'bad_json', id FROM m"
        )
        create_key(conn, "someone", "admin")


@pytest.fixture
def arranged(database_url: str) -> str:
    _arrange(database_url)
    return database_url


REFUSED = {
    "urbanpulse_ingest": [
        "SELECT secret_hash FROM api_keys",
        "INSERT INTO api_keys (id, name, role, secret_hash) VALUES ('k', 'k', 'admin', 'h')",
        "UPDATE gateways SET district_id = NULL",  # only online and last_seen
        "INSERT INTO alerts (rule_id, subject_id, severity, message) VALUES "
        "('r', 's', 'warning', 'm')",
        "DROP TABLE sensors",
        # (It may create tables in partition mode: a partition is one.)
    ],
    "urbanpulse_api": [
        "INSERT INTO readings (time, sensor_key, quantity_key, value) VALUES (now(), 1, 1, 1.0)",
        "DELETE FROM readings",
        "UPDATE quarantine_messages SET payload = ''",
        "DROP TABLE sensors",
        "TRUNCATE api_keys",
        "CREATE TABLE intruder (x int)",
        "DELETE FROM districts",
    ],
    "urbanpulse_monitor": [
        "SELECT secret_hash FROM api_keys",
        "INSERT INTO readings (time, sensor_key, quantity_key, value) VALUES (now(), 1, 1, 1.0)",
        "UPDATE sensors SET status = 'retired'",
        "DROP TABLE kpi_current",
    ],
    "urbanpulse_grafana": [
        "SELECT id FROM api_keys",
        "SELECT payload FROM quarantine_messages",
        "SELECT detail FROM quarantine",
        "SELECT * FROM readings",
        "INSERT INTO districts (id, name) VALUES ('x', 'x')",
        "SELECT * FROM pack_ledger",
    ],
}
ALLOWED = {
    "urbanpulse_ingest": [
        "UPDATE gateways SET online = true, last_seen = now() WHERE id = 'gw-a'",
        "SELECT id, kind FROM sensors",
    ],
    # The API checks keys, so it reads their hashes.
    "urbanpulse_api": ["SELECT secret_hash FROM api_keys", "SELECT * FROM readings LIMIT 1"],
    "urbanpulse_monitor": ["SELECT * FROM readings_1h LIMIT 1", "DELETE FROM kpi_current"],
    "urbanpulse_grafana": [
        "SELECT reason, count(*) FROM quarantine GROUP BY reason",
        "SELECT * FROM readings_1m LIMIT 1",
        "SELECT * FROM kpi_current LIMIT 1",
        "SELECT * FROM alerts LIMIT 1",
    ],
}


@pytest.mark.parametrize("group", sorted(REFUSED))
def test_each_role_is_refused_what_it_must_not_do(arranged: str, login: Login, group: str) -> None:
    url = login(group)
    for statement in ALLOWED[group]:
        _allowed(url, statement)
    assert [s for s in REFUSED[group] if not _refused(url, s)] == []


def test_the_refusal_check_can_fail(arranged: str) -> None:
    # The superuser is refused nothing: _refused says so.
    assert not _refused(arranged, "SELECT secret_hash FROM api_keys")


def _pack(sensor: str, start: float, count: int) -> bytes:
    return encode(
        [
            Record(name=f"{sensor}/voltage", time=start + i, unit="V", value=230.0)
            for i in range(count)
        ]
    )


def _count(url: str, query: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_ingestion_works_under_its_role(
    arranged: str,
    login: Login,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    storage_mode: str,
) -> None:
    require(mqtt_broker, persistence=True)
    url = login("urbanpulse_ingest")
    worker = IngestWorker(
        WorkerConfig(
            database_url=url,
            mqtt_url=mqtt_broker.url,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            group=f"g{uuid.uuid4().hex[:8]}",
            session_expiry_s=60,
            flush_ms=20,
        )
    )
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, ready.set), daemon=True)
    thread.start()
    try:
        assert ready.wait(15), "the worker did not subscribe"
        time.sleep(0.2)
        gateway = mqtt_connect(mqtt_broker)
        now = time.time()
        for info in (
            gateway.client.publish(topics.up_topic("gw-a"), _pack("fdr-1", now - 60, 10), qos=1),
            gateway.client.publish(topics.up_topic("gw-a"), b"{not senml", qos=1),
            gateway.client.publish(topics.status_topic("gw-a"), b"online", qos=1),
        ):
            info.wait_for_publish(10)
        wait_for(lambda: _count(arranged, "SELECT count(*) FROM readings") == 10, "readings")
        wait_for(lambda: _count(arranged, "SELECT count(*) FROM quarantine") == 2, "quarantine")
        wait_for(
            lambda: _count(arranged, "SELECT count(*) FROM gateways WHERE online") == 1,
            "gateway status",
        )
    finally:
        stop.set()
        thread.join(10)
    if storage_mode == "partitioned":
        # Its maintenance creates partitions ahead and drops expired ones (owner's rights).
        ahead = time.time() + 30 * 86400
        created = partitions.maintain(url, now=ahead, ahead=3, retention_s=10 * 86400)
        assert created.created > 0
        assert created.dropped


def test_retention_is_applied_by_ingestion_where_it_may_and_else_by_the_owner(
    arranged: str, login: Login, storage_mode: str
) -> None:
    """Partition mode: ingestion's role owns the partitions and deletes rollup rows, so its
    maintenance applies the policies. TimescaleDB: the chunks, the aggregates' rows and their
    refresh jobs are the owner's, and the ingestion role is refused; deploy/compose.yaml runs
    ``urbanpulse retention apply --every`` as the owner for that (tests/deploy/test_compose.py).
    """
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
    with psycopg.connect(libpq_url(arranged)) as conn:
        row = conn.execute("SELECT key FROM sensors WHERE id = 'fdr-1'").fetchone()
        assert row is not None
        writer = ReadingWriter(conn, storage_mode)
        voltage = QUANTITIES["voltage"].key
        writer.write(
            [((day + timedelta(hours=h)).timestamp(), row[0], voltage, 230.0) for h in range(24)]
        )
        retention.set_policy(conn, make_policy("kind", "feeder_meter", 5), "test")
        conn.commit()
    expired = "SELECT count(*) FROM readings WHERE time < now() - interval '5 days'"
    assert _count(arranged, expired) == 24
    with psycopg.connect(libpq_url(login("urbanpulse_ingest"))) as conn:
        if storage_mode == "partitioned":
            assert retention.apply(conn, storage_mode).raw_rows == 24
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                retention.apply(conn, storage_mode)
    if storage_mode == "timescaledb":
        assert _count(arranged, expired) == 24
        result = CliRunner().invoke(cli, ["retention", "apply", "--database-url", arranged])
        assert result.exit_code == 0, result.output
        assert "removed: raw rows 24;" in result.output
    assert _count(arranged, expired) == 0


def test_the_api_works_under_its_role(
    arranged: str, login: Login, mqtt_broker: BrokerUnderTest
) -> None:
    url = login("urbanpulse_api")
    with psycopg.connect(libpq_url(arranged)) as conn:
        _, admin = create_key(conn, "admin", "admin")
        install_defaults(conn)
        alert = conn.execute(
            "INSERT INTO alerts (rule_id, subject_id, district_id, domain, severity, message, "
            "value) VALUES ('water-low-pressure', 'p-1', 'd01', 'water', 'warning', 'm', 1) "
            "RETURNING id"
        ).fetchone()
    assert alert is not None
    settings = Settings(database_url=url, mqtt_url=mqtt_broker.url, _env_file=None)  # type: ignore[call-arg]
    headers = {"X-API-Key": admin}
    with TestClient(create_app(settings)) as client:
        paths = [
            path
            for path, item in client.get("/openapi.json").json()["paths"].items()
            if "get" in item and "{" not in path and not path.endswith(("/stream", "/events"))
        ]
        assert len(paths) > 5
        failed = {}
        for path in paths:
            response = client.get(path, headers=headers)
            if response.status_code >= 500:
                failed[path] = response.text
        assert failed == {}
        writes = [
            client.post("/v1/districts", json={"id": "d02", "name": "South"}, headers=headers),
            client.post("/v1/gateways", json={"id": "gw-b", "district_id": "d02"}, headers=headers),
            client.put("/v1/settings/timezone", json={"value": "Europe/Rome"}, headers=headers),
            client.post(f"/v1/alerts/{alert[0]}/acknowledge", json={}, headers=headers),
            client.post(f"/v1/alerts/{alert[0]}/clear", json={}, headers=headers),
        ]
        assert [(w.status_code // 100, w.text) for w in writes if w.status_code // 100 != 2] == []


def test_the_api_erases_only_through_the_audited_function(
    arranged: str, login: Login, mqtt_broker: BrokerUnderTest, storage_mode: str
) -> None:
    url = login("urbanpulse_api")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(1)
    with psycopg.connect(libpq_url(arranged)) as conn:
        _, admin = create_key(conn, "admin", "admin")
        conn.execute(
            "INSERT INTO readings SELECT %s + h * interval '1 hour', s.key, 8, h "
            "FROM sensors s, generate_series(0, 23) h WHERE s.id = 'fdr-1'",
            (day,),
        )
        conn.commit()
        rollups.refresh(conn, storage_mode)
    settings = Settings(database_url=url, mqtt_url=mqtt_broker.url, _env_file=None)  # type: ignore[call-arg]
    body = {"sensor_id": "fdr-1", "start": day.isoformat(), "reason": "roles test"}
    with TestClient(create_app(settings)) as client:
        for rollup, hours in (("keep", (0, 6)), ("recompute", (6, 12))):
            span = {
                "start": (day + timedelta(hours=hours[0])).isoformat(),
                "end": (day + timedelta(hours=hours[1])).isoformat(),
            }
            done = client.post(
                "/v1/erasures",
                json=body | span | {"rollups": rollup},
                headers={"X-API-Key": admin},
            )
            assert (done.status_code, done.json()["rows_erased"]) == (201, 6), done.text
    assert _count(arranged, "SELECT count(*) FROM readings") == 12
    # The function deletes only what an open erasure names; they are all finished now.
    refused = "SELECT urbanpulse_erase_batch(1, 10)"
    with psycopg.connect(libpq_url(url)) as conn, pytest.raises(psycopg.errors.NoDataFound):
        conn.execute(refused)
    assert _refused(login("urbanpulse_monitor"), refused)
    with (
        psycopg.connect(libpq_url(url)) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue),
    ):
        conn.execute("SELECT urbanpulse_erase_batch(1, NULL)")  # NULL would be LIMIT ALL
    # A caller's temporary tables cannot stand in for the audit: the definer's search path
    # names the schema, pg_temp last (review finding: this deleted readings unaudited).
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(
            "CREATE TEMP TABLE erasures AS SELECT 999::bigint AS id, 'fdr-1'::text AS sensor_id, "
            "%s::timestamptz AS range_start, %s::timestamptz AS range_end, "
            "NULL::timestamptz AS finished_at",
            (day, day + timedelta(days=1)),
        )
        conn.execute("CREATE TEMP TABLE sensors AS SELECT id, key FROM public.sensors")
        with pytest.raises(psycopg.errors.NoDataFound):
            conn.execute("SELECT urbanpulse_erase_batch(999, 100)")
    assert _count(arranged, "SELECT count(*) FROM readings") == 12
    # The audit is completed, never rewritten: who, what and why stay as recorded.
    assert _refused(url, "UPDATE erasures SET reason = 'nothing to see'")
    assert _refused(url, "UPDATE erasures SET range_start = range_start - interval '1 day'")
    # Changing the default policy is the API's to do under its role (it was a 500 when it also
    # rewrote storage_settings, which that role may only read).
    with TestClient(create_app(settings)) as client:
        changed = client.put(
            "/v1/retention/default", json={"raw_days": 500}, headers={"X-API-Key": admin}
        )
        assert changed.status_code == 200, changed.text


def test_imports_run_under_the_ingestion_role_not_the_apis(
    arranged: str, login: Login, mqtt_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    """Issue 16: an import writes readings, which the API's role may not. POST /v1/imports
    answers 503 naming URBANPULSE_IMPORT_DATABASE_URL (not 500) while its role is the API's,
    and imports with a login of the ingestion role there; so does ``urbanpulse import``."""
    api_url, ingest_url = login("urbanpulse_api"), login("urbanpulse_ingest")
    with psycopg.connect(libpq_url(arranged)) as conn:
        _, engineer = create_key(conn, "engineer", "engineer")
    moment = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0).isoformat()
    body = (
        f"sensor,quantity,time,value,unit\nfdr-1,voltage,{moment},230.5,V\n"
        f"ghost,voltage,{moment},1,V\n"
    )
    headers = {"X-API-Key": engineer, "Content-Type": "text/csv"}

    def post(import_url: str | None) -> Any:
        settings = Settings(  # type: ignore[call-arg]
            database_url=api_url,
            import_database_url=import_url,
            mqtt_url=mqtt_broker.url,
            _env_file=None,
        )
        with TestClient(create_app(settings)) as client:
            return client.post("/v1/imports?source=a.csv", content=body, headers=headers)

    for import_url in (None, api_url):  # unset, or set to a role that may not either
        refused = post(import_url)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["setting"] == "URBANPULSE_IMPORT_DATABASE_URL"
        assert "URBANPULSE_IMPORT_DATABASE_URL" in problem["detail"]
        assert "INSERT on readings" in problem["missing"]
    assert _count(arranged, "SELECT count(*) FROM readings") == 0
    done = post(ingest_url)
    assert done.status_code == 200, done.text
    assert (done.json()["stored"], done.json()["quarantined"]) == (1, 1)
    assert _count(arranged, "SELECT count(*) FROM readings") == 1
    # The command, as the ingest login: the checkpoint table is its to write (migration 0013).
    later = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0).isoformat()
    path = tmp_path / "b.csv"
    path.write_text(f"sensor,quantity,time,value,unit\nfdr-1,voltage,{later},231,V\n")
    result = CliRunner().invoke(cli, ["import", str(path), "--json", "--database-url", ingest_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["stored"] == 1
    assert _count(arranged, "SELECT count(*) FROM readings") == 2


def test_the_monitor_works_under_its_role(arranged: str, login: Login) -> None:
    url = login("urbanpulse_monitor")
    with psycopg.connect(libpq_url(arranged)) as conn:
        install_defaults(conn)
    result = CliRunner().invoke(cli, ["monitor", "--once", "--database-url", url])
    assert result.exit_code == 0, result.output


def test_grafana_runs_every_panel_query_under_its_role(arranged: str, login: Login) -> None:
    url = login("urbanpulse_grafana")
    end = datetime.now(UTC)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        ran, refused = refused_queries(conn, end - timedelta(days=1), end)
    assert ran > 0
    assert refused == []


def _grants(url: str) -> int:
    return _count(
        url,
        "SELECT count(*) FROM information_schema.role_table_grants "
        "WHERE grantee LIKE 'urbanpulse\\_%'",
    )


def test_the_roles_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    assert _grants(database_url) > 0
    engine = sa.create_engine(sqlalchemy_url(database_url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            command.downgrade(_alembic_config(connection), "0005")
            connection.commit()
    finally:
        engine.dispose()
    assert _grants(database_url) == 0
    migrate.upgrade(database_url)
    assert _grants(database_url) > 0


def test_a_migration_by_a_non_superuser_keeps_its_single_role(postgres_server: str) -> None:
    # `urbanpulse up` migrates as the owner of its embedded database, not a superuser.
    with psycopg.connect(libpq_url(postgres_server), autocommit=True) as conn:
        name, server_url = _new_login(conn, postgres_server, "owner")
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(*[sql.Identifier(name)] * 2))
        # As EmbeddedPostgres.app_url does: the migration looks at shared_preload_libraries.
        conn.execute(sql.SQL("GRANT pg_read_all_settings TO {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    try:
        migrate.upgrade(url, mode="partitioned")
        assert migrate.status(url).pending == ()
        assert _grants(url) == 0
    finally:
        with psycopg.connect(libpq_url(postgres_server), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _run_initdb(script: str, url: str, secrets_dir: Path) -> None:
    """A deploy/postgres/initdb script, run as the TimescaleDB image runs it: psql as the
    superuser of ``url`` on its database, the secrets as files."""
    parts = urlsplit(url)
    result = subprocess.run(
        ["sh", str(INITDB / script)],
        env={
            "PATH": f"{_wheel_paths()[0] / 'bin'}:{os.environ['PATH']}",
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_DB": parts.path.lstrip("/"),
            "PGHOST": parts.hostname or "127.0.0.1",
            "PGPORT": str(parts.port or 5432),
            "PGPASSWORD": parts.password or "",
            "URBANPULSE_SECRETS_DIR": str(secrets_dir),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _as(url: str, user: str, password: str) -> str:
    """``url`` with another login's credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def _hand_to_owner(url: str, secrets_dir: Path) -> str:
    """deploy/postgres/initdb/15-owner.sh on ``url``'s database; the owner's URL there. The
    role is the server's, like the group roles, and stays; each run gives it a new password."""
    password = secrets.token_urlsafe(12)
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "db_owner_password").write_text(password + "\n")
    _run_initdb("15-owner.sh", url, secrets_dir)
    return _as(url, OWNER, password)


@pytest.fixture
def owner_database(
    request: pytest.FixtureRequest, database_url: str, storage_mode: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """A new database set up as deploy/ does it: 15-owner.sh, then the migrations as the
    owner. (superuser's URL, owner's URL); ``database_url`` (migrated by the superuser, which
    makes the group roles where a server has none yet) is the reference to compare with."""
    server = request.getfixturevalue(
        "postgres_server" if storage_mode == "partitioned" else "timescale_server"
    )
    database = f"urbanpulse_owner_{uuid.uuid4().hex[:12]}"
    name = sql.Identifier(database)
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    url = with_database(server, database)
    try:
        owner_url = _hand_to_owner(url, tmp_path / "secrets")
        migrate.upgrade(owner_url, mode=storage_mode)
        yield url, owner_url
    finally:
        with psycopg.connect(libpq_url(server), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def _rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(query, params).fetchall()


def _check_owner_role(url: str) -> None:
    """The owner logs in and is no superuser, makes no roles or databases, replicates nothing,
    bypasses no row security; it is a member of only what 15-owner.sh says why it needs."""
    attributes = _rows(
        url,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin "
        "FROM pg_roles WHERE rolname = %s",
        (OWNER,),
    )
    assert attributes == [(False, False, False, False, False, True)]
    memberships = _rows(
        url,
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s ORDER BY 1",
        (OWNER,),
    )
    assert memberships == [("pg_read_all_settings",), ("urbanpulse_ingest",)]


# Whoever owns them, with the extension's own objects aside; TimescaleDB keeps chunks and the
# aggregates' materialisations in _timescaledb_internal.
NOT_THE_OWNERS = """
SELECT c.oid::regclass::text, pg_get_userbyid(c.relowner) FROM pg_class c
WHERE c.relnamespace::regnamespace::text IN ('public', '_timescaledb_internal')
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND pg_get_userbyid(c.relowner) <> %(owner)s
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND pg_get_userbyid(p.proowner) <> %(owner)s
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1
"""


def _check_ownership(url: str, storage_mode: str, superusers: list[tuple[str, str]]) -> None:
    """Every table, view, sequence and function of the schema is the owner's, but for the
    readings tables and their partitions in partition mode (the ingestion role's by design,
    migration 0006) and ``superusers``."""
    others = _rows(url, NOT_THE_OWNERS, {"owner": OWNER})  # type: ignore[arg-type]
    if storage_mode == "timescaledb":
        # The compression and refresh jobs run as, and may be altered by, their owner only.
        jobs = _rows(
            url,
            "SELECT owner::text, count(*) FROM timescaledb_information.jobs "
            "WHERE hypertable_name IS NOT NULL GROUP BY 1",
        )
        assert [owner for owner, _ in jobs] == [OWNER]
    assert [(n, o) for n, o in others if o != "urbanpulse_ingest"] == superusers
    ingests = {n for n, o in others if o == "urbanpulse_ingest"}
    if storage_mode == "timescaledb":
        assert ingests == set()
    else:
        # Every partition too, whoever made it (the owner's migration made some ahead).
        made = _rows(
            url,
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent IN ('readings'::regclass, 'readings_extra'::regclass)",
        )
        assert made
        assert {owner for _, owner in made} == {"urbanpulse_ingest"}
        assert ingests == {"readings", "readings_extra"} | {name for name, _ in made}


def _privileges(url: str) -> set[tuple[str, str, str]]:
    """What the group roles may do on the schema's tables, columns and functions (who granted
    it aside: the owner does, where the superuser did). Partitions aside: their dates differ."""
    query = """
    SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants
    WHERE table_schema = 'public' AND table_name !~ '_p[0-9]{8}'
    UNION ALL
    SELECT grantee, table_name || '.' || column_name, privilege_type
    FROM information_schema.column_privileges
    WHERE table_schema = 'public' AND table_name !~ '_p[0-9]{8}'
    UNION ALL
    SELECT grantee, routine_name, privilege_type FROM information_schema.role_routine_grants
    WHERE routine_schema = 'public'
    """
    return {
        (str(g), str(t), str(p))
        for g, t, p in _rows(url, query)
        if str(g).startswith("urbanpulse_") and g != OWNER
    }


def _check_later_tables_are_granted(owner_url: str) -> None:
    """A table a later migration makes as the owner gets the default grants of migration 0006:
    they are the owner's default privileges, not the superuser's."""
    with psycopg.connect(libpq_url(owner_url)) as conn:
        conn.execute("CREATE TABLE later_table (id bigserial PRIMARY KEY)")
        row = conn.execute(
            "SELECT has_table_privilege('urbanpulse_api', 'later_table', 'SELECT'), "
            "has_table_privilege('urbanpulse_monitor', 'later_table', 'SELECT'), "
            "has_sequence_privilege('urbanpulse_ingest', 'later_table_id_seq', 'USAGE'), "
            "has_table_privilege('urbanpulse_grafana', 'later_table', 'SELECT'), "
            "has_table_privilege('urbanpulse_api', 'later_table', 'INSERT')"
        ).fetchone()
        conn.rollback()
    assert row == (True, True, True, False, False)


def _check_retention_as_owner(url: str, owner_url: str, storage_mode: str, login: Login) -> None:
    """Readings past the policies: ``urbanpulse retention apply`` as the owner drops the
    chunks (partitions) past the longest raw retention and deletes the rows past their kind's;
    in TimescaleDB the ingestion role is refused both."""
    _arrange(url)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT key FROM sensors WHERE id = 'fdr-1'").fetchone()
        assert row is not None
        voltage = QUANTITIES["voltage"].key
        ReadingWriter(conn, storage_mode).write(
            [
                ((hour - timedelta(days=days, hours=h)).timestamp(), row[0], voltage, 230.0)
                for days in (10, 40)
                for h in range(24)
            ]
        )
        retention.set_policy(conn, make_policy("default", "", 30), "test")
        retention.set_policy(conn, make_policy("kind", "feeder_meter", 5), "test")
        conn.commit()
    assert _count(url, "SELECT count(*) FROM readings") == 48
    if storage_mode == "timescaledb":
        with (
            psycopg.connect(libpq_url(login("urbanpulse_ingest", url))) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            retention.apply(conn, storage_mode)
        assert _count(url, "SELECT count(*) FROM readings") == 48
    result = CliRunner().invoke(cli, ["retention", "apply", "--database-url", owner_url])
    assert result.exit_code == 0, result.output
    assert "removed: raw rows 24;" in result.output
    dropped = int(result.output.split("partitions or chunks ")[1].split()[0])
    assert dropped >= 1, result.output
    assert _count(url, "SELECT count(*) FROM readings") == 0


def test_migrations_as_the_owner_leave_it_every_table_and_the_roles_their_grants(
    owner_database: tuple[str, str], database_url: str, storage_mode: str, login: Login
) -> None:
    """deploy/'s `migrate`: 15-owner.sh, then `urbanpulse db upgrade` as the owner, no
    superuser. The group roles get exactly what a superuser's migration gives them, and the
    hourly retention job works as the owner."""
    url, owner_url = owner_database
    _check_owner_role(url)
    assert migrate.status(owner_url).pending == ()
    # No event trigger without a superuser: nothing of the superuser's in the schema at all.
    _check_ownership(url, storage_mode, superusers=[])
    assert _privileges(url) == _privileges(database_url) != set()
    for group in sorted(REFUSED):
        group_url = login(group, url)
        for statement in ALLOWED[group]:
            _allowed(group_url, statement)
        assert [s for s in REFUSED[group] if not _refused(group_url, s)] == []
    _check_later_tables_are_granted(owner_url)
    # The owner takes the grants back as it made them, and makes them again.
    engine = sa.create_engine(sqlalchemy_url(owner_url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            command.downgrade(_alembic_config(connection), "0005")
            connection.commit()
    finally:
        engine.dispose()
    assert _privileges(url) == set()
    migrate.upgrade(owner_url)
    _check_ownership(url, storage_mode, superusers=[])
    assert _privileges(url) == _privileges(database_url)
    _check_retention_as_owner(url, owner_url, storage_mode, login)


def test_the_owner_script_takes_over_a_database_the_superuser_migrated(
    database_url: str, storage_mode: str, login: Login, tmp_path: Path
) -> None:
    """An upgrade of a deployment that ran `migrate` and `retention` as the superuser:
    15-owner.sh, run by hand once, hands every table to the owner; the roles keep their
    grants; `migrate` as the owner has nothing left to do; and running it again changes
    nothing."""
    before = _privileges(database_url)
    owner_url = _hand_to_owner(database_url, tmp_path / "secrets")
    _check_owner_role(database_url)
    superuser = urlsplit(database_url).username or "postgres"
    # The partition owner's event trigger runs in whoever issues DDL: its function stays
    # the superuser's, for no one else may change what it does.
    kept = [("urbanpulse_partition_owner()", superuser)]
    _check_ownership(database_url, storage_mode, superusers=kept)
    assert _privileges(database_url) == before
    assert migrate.status(owner_url).pending == ()
    migrate.upgrade(owner_url)
    if storage_mode == "timescaledb":
        # TimescaleDB before 2.26 (deploy/ pins 2.17) leaves the policy jobs with the old
        # owner on ALTER ... OWNER TO: as it would, for the script to take them over too.
        with psycopg.connect(libpq_url(database_url)) as conn:
            conn.execute(
                "UPDATE _timescaledb_config.bgw_job SET owner = current_user::text::regrole "
                "WHERE hypertable_id IS NOT NULL"
            )
    owner_url = _hand_to_owner(database_url, tmp_path / "secrets")
    _check_ownership(database_url, storage_mode, superusers=kept)
    assert _privileges(database_url) == before
    _check_later_tables_are_granted(owner_url)
    _check_retention_as_owner(database_url, owner_url, storage_mode, login)


def test_the_deploy_init_script_makes_logins_that_get_their_roles_grants(
    tmp_path: Path,
) -> None:
    """deploy/postgres/initdb/10-roles.sh and 15-owner.sh, run as the TimescaleDB image would
    run them (psql as the superuser on a new server, secrets as files), then the migrations as
    the owner, as deploy/'s `migrate` runs them: each login has its role's rights and no more.
    On a server of its own: the logins are cluster-wide names."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    passwords = {}
    for login in ("ingest", "api", "monitor", "grafana"):
        passwords[login] = secrets.token_urlsafe(12)
        (secrets_dir / f"db_{login}_password").write_text(passwords[login] + "\n")
    with EmbeddedPostgres(fast=True) as server_url:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE urbanpulse")
        url = with_database(server_url, "urbanpulse")
        _run_initdb("10-roles.sh", url, secrets_dir)
        owner_url = _hand_to_owner(url, secrets_dir)
        migrate.upgrade(owner_url, mode="partitioned")
        _check_ownership(url, "partitioned", superusers=[])

        def as_login(login: str) -> str:
            return _as(url, login, passwords[login])

        _allowed(as_login("api"), "SELECT secret_hash FROM api_keys")
        assert _refused(as_login("api"), "INSERT INTO readings VALUES (now(), 1, 1, 1.0)")
        assert _refused(as_login("grafana"), "SELECT id FROM api_keys")
        assert _refused(as_login("ingest"), "SELECT id FROM api_keys")
        _allowed(as_login("ingest"), "SELECT count(*) FROM sensors")
        assert _refused(as_login("monitor"), "SELECT id FROM api_keys")
        # postgres-exporter scrapes as the monitor login.
        with psycopg.connect(as_login("monitor")) as conn:
            row = conn.execute("SELECT pg_has_role('pg_monitor', 'MEMBER')").fetchone()
        assert row == (True,)
        # A wrong password is refused: the logins are not open to anyone.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(as_login("api").replace(passwords["api"], "wrong")).close()
        owner_password = (secrets_dir / "db_owner_password").read_text().strip()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(owner_url.replace(owner_password, "wrong")).close()
