"""Settings come from URBANPULSE_* variables or an env file; a bad one is named in the error."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from services.settings import (
    ApiSettings,
    IngestSettings,
    MonitorSettings,
    SettingsError,
    StorageMode,
    load_settings,
)


def test_defaults_need_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.database_url is None
    assert settings.storage_mode is StorageMode.AUTO
    assert settings.retention == timedelta(days=400)


def test_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URBANPULSE_DATABASE_URL", "postgresql://u@db:5432/city")
    monkeypatch.setenv("URBANPULSE_MQTT_URL", "mqtt://broker:1883")
    monkeypatch.setenv("URBANPULSE_MQTT_PASSWORD", "s3cret")
    monkeypatch.setenv("URBANPULSE_STORAGE_MODE", "partitioned")
    monkeypatch.setenv("URBANPULSE_RETENTION", "P30D")
    monkeypatch.setenv("URBANPULSE_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.database_url == "postgresql://u@db:5432/city"
    assert settings.mqtt_password is not None
    assert settings.mqtt_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.storage_mode is StorageMode.PARTITIONED
    assert settings.retention == timedelta(days=30)
    assert settings.log_level == "DEBUG"


def test_an_env_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = tmp_path / "city.env"
    env.write_text("URBANPULSE_API_PORT=9000\n")
    monkeypatch.setenv("URBANPULSE_ENV_FILE", str(env))
    assert load_settings().api_port == 9000


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param(
            "URBANPULSE_DATABASE_URL",
            "mysql://x/y",
            "must be a postgresql:// URL",
            id="database-url",
        ),
        pytest.param("URBANPULSE_MQTT_URL", "http://broker", "must be an mqtt://", id="mqtt-url"),
        pytest.param("URBANPULSE_API_PORT", "99999", "less than or equal to 65535", id="port"),
        pytest.param("URBANPULSE_STORAGE_MODE", "cassandra", "auto", id="mode"),
        pytest.param("URBANPULSE_LOG_LEVEL", "LOUD", "must be one of", id="log-level"),
        pytest.param(
            "URBANPULSE_API_REQUEST_SLOTS",
            "12",
            "must be below URBANPULSE_API_POOL_MAX (12)",
            id="request-slots",
        ),
    ],
)
def test_a_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"{variable}: " in str(info.value)
    assert message in str(info.value)


def test_the_settings_module_knows_no_command_line() -> None:
    # Settings are built by the API and the workers too: a bad value must reach them as a
    # SettingsError, never as a process exit, so the module does not even load Typer.
    probe = "import sys, services.settings; print('typer' in sys.modules, 'click' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


def test_each_process_reads_its_tuning_from_its_view(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URBANPULSE_MONITOR_EVERY", "PT90S")
    monkeypatch.setenv("URBANPULSE_MONITOR_METRICS_PORT", "0")
    monkeypatch.setenv("URBANPULSE_INGEST_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("URBANPULSE_API_POOL_MAX", "30")
    monkeypatch.setenv("URBANPULSE_API_KPI_CACHE_TTL", "PT5S")
    settings = load_settings()
    assert MonitorSettings.of(settings) == MonitorSettings(90.0, 0, "127.0.0.1")
    ingest = IngestSettings.of(settings)
    assert (ingest.metrics_host, ingest.metrics_port) == ("0.0.0.0", 9108)
    api = ApiSettings.of(settings)
    assert (api.pool_max, api.request_slots, api.kpi_cache_ttl_s) == (30, 10, 5.0)
    # The defaults, with no environment read: what the environment above did not change.
    assert ApiSettings.defaults().pool_max == 12
    assert MonitorSettings.defaults().every_s == 60.0


def test_a_monitor_round_under_a_second_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URBANPULSE_MONITOR_EVERY", "PT0.5S")
    with pytest.raises(SettingsError, match="URBANPULSE_MONITOR_EVERY"):
        load_settings()
