"""`urbanpulse up` on a fresh data directory: starts the real services, prints where, stops."""

from __future__ import annotations

import fcntl
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from services.devstack.postgres import EmbeddedPostgres
from services.devstack.up import Platform, Service, _server_data_dir, saved_port
from services.storage import migrate


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root the server runs as another user, who cannot enter it.
    path = Path(tempfile.mkdtemp(prefix="urbanpulse-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _up(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin:/usr/sbin", "HOME": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--exit-after-start",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 0), timeout=0.5):
            return True
    except OSError:
        return False


def test_up_starts_everything_and_keeps_data_across_restarts(data_dir: Path) -> None:
    first = _up(data_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "UrbanPulse is up" in first.stdout
    settings = dict(
        line.split("=", 1) for line in (data_dir / "urbanpulse.env").read_text().splitlines()
    )
    database_url = settings["URBANPULSE_DATABASE_URL"]
    password = urlsplit(database_url).password
    assert password
    assert database_url.replace(password, "***") in first.stdout  # shown without its password
    assert settings["URBANPULSE_MQTT_URL"] in first.stdout
    # The API's URL and where the admin key it made is are printed, not the key.
    assert settings["URBANPULSE_API_URL"] in first.stdout
    key = (data_dir / "api-key").read_text().strip()
    assert key not in first.stdout
    assert str(data_dir / "api-key") in first.stdout
    assert f"{settings['URBANPULSE_API_URL']}/console" in first.stdout  # where the console is
    assert "Grafana" in first.stdout
    assert "provisioning" in first.stdout
    assert (data_dir / "api-key").stat().st_mode & 0o077 == 0
    # Everything it started is stopped again.
    assert not _listening(database_url)
    assert not _listening(settings["URBANPULSE_MQTT_URL"])

    second = _up(data_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    again = dict(
        line.split("=", 1) for line in (data_dir / "urbanpulse.env").read_text().splitlines()
    )
    assert again["URBANPULSE_DATABASE_URL"] == database_url  # same port, same data
    assert (data_dir / "api-key").read_text().strip() == key  # the same key, still valid


def test_up_leaves_a_migrated_database(data_dir: Path) -> None:
    assert _up(data_dir).returncode == 0
    # Start the same data directory again by hand and look inside.
    server = EmbeddedPostgres(_server_data_dir(data_dir))
    server.start()
    try:
        url = server.app_url()  # the services' database
        status = migrate.status(url)
        assert status.pending == ()
        assert status.mode in ("partitioned", "timescaledb")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM quantities").fetchone()[0] > 0  # type: ignore[index]
    finally:
        server.stop()


def test_a_second_up_on_the_same_data_directory_is_refused(data_dir: Path) -> None:
    # Held as a running `urbanpulse up` holds it.
    with (data_dir / "up.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = _up(data_dir)
    assert second.returncode == 1
    assert "another `urbanpulse up` is running" in second.stdout
    assert not (data_dir / "postgres").exists()  # it started nothing


def _platform(base: Path) -> Platform:
    database = "postgresql://urbanpulse_app:s3cret@127.0.0.1:54321/urbanpulse"
    return Platform(
        database_url=database,
        mqtt_url="mqtt://127.0.0.1:18830",
        api_url="http://127.0.0.1:8001",
        env_file=base / "urbanpulse.env",
        services=(
            Service(
                "database",
                "postgresql://urbanpulse_app:***@127.0.0.1:54321/urbanpulse",
                "embedded",
                url=database,
            ),
            Service(
                "API key", str(base / "api-key"), "readable by you only", path=base / "api-key"
            ),
        ),
    )


def test_the_env_file_up_writes_gives_back_its_ports(tmp_path: Path) -> None:
    platform = _platform(tmp_path)
    platform.env_file.write_text(platform.env_text(("ingest", "pw:with@signs/")))
    assert saved_port(platform.env_file, "URBANPULSE_DATABASE_URL") == 54321
    assert saved_port(platform.env_file, "URBANPULSE_MQTT_URL") == 18830
    assert saved_port(platform.env_file, "URBANPULSE_API_URL") == 8001
    assert saved_port(platform.env_file, "URBANPULSE_MQTT_PASSWORD") is None  # not a URL
    assert saved_port(tmp_path / "none.env", "URBANPULSE_API_URL") is None
    assert platform.services[0].port == 54321
    assert platform.services[1].port is None


def test_only_a_local_port_is_taken_back(tmp_path: Path) -> None:
    env = tmp_path / "urbanpulse.env"
    env.write_text(
        "URBANPULSE_DATABASE_URL=postgresql://u@db.example:5432/city\n"
        "URBANPULSE_MQTT_URL=mqtt://127.0.0.1\n"  # no port
        "URBANPULSE_API_URL=http://127.0.0.1:99999\n"  # out of range
        "URBANPULSE_API_URL_OLD=http://127.0.0.1:8000\n"  # another variable
    )
    for variable in ("URBANPULSE_DATABASE_URL", "URBANPULSE_MQTT_URL", "URBANPULSE_API_URL"):
        assert saved_port(env, variable) is None


def test_the_table_and_the_env_file_come_from_the_description(tmp_path: Path) -> None:
    platform = _platform(tmp_path)
    assert platform.table()[0] == (
        "  database        [bold]postgresql://urbanpulse_app:***@127.0.0.1:54321/urbanpulse"
        "[/bold]\n                  [dim]embedded[/dim]"
    )
    assert all("s3cret" not in line for line in platform.table())
    given = platform.env_text(None)  # a broker given by URL: its login stays in the settings
    assert given.splitlines() == [
        "URBANPULSE_DATABASE_URL=postgresql://urbanpulse_app:s3cret@127.0.0.1:54321/urbanpulse",
        "URBANPULSE_MQTT_URL=mqtt://127.0.0.1:18830",
        "URBANPULSE_API_URL=http://127.0.0.1:8001",
    ]
    assert platform.env_text(("ingest", "pw")).endswith(
        "URBANPULSE_MQTT_USERNAME=ingest\nURBANPULSE_MQTT_PASSWORD=pw\n"
    )
