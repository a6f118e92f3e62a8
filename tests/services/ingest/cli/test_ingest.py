"""The one Settings -> WorkerConfig conversion: settings decide, options given win."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from services.ingest.cli.ingest import worker_config
from services.ingest.worker import WorkerConfig
from services.settings import IngestSettings, Settings, SettingsError, load_settings


def _config(settings: Settings, **options: Any) -> WorkerConfig:
    return worker_config(
        settings,
        database_url="postgresql://u@db/city",
        mqtt_url="mqtt://broker:1883",
        client_id="ingest-1",
        username="ingest",
        password="pw",
        **options,
    )


def test_options_left_out_take_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URBANPULSE_INGEST_BATCH_RECORDS", "777")
    monkeypatch.setenv("URBANPULSE_INGEST_FLUSH_MS", "12.5")
    monkeypatch.setenv("URBANPULSE_UNKNOWN_SENSORS", "register")
    monkeypatch.setenv("URBANPULSE_EVENTS_RETENTION", "PT2H")
    config = _config(load_settings())
    assert (config.batch_records, config.flush_ms) == (777, 12.5)
    assert (config.register_unknown, config.events_retention_s) == (True, 7200.0)
    assert (config.database_url, config.client_id, config.password) == (
        "postgresql://u@db/city",
        "ingest-1",
        "pw",
    )
    given = _config(load_settings(), group="g", batch_records=5, flush_ms=1.0)
    assert (given.batch_records, given.flush_ms, given.group) == (5, 1.0, "g")


def test_a_bad_tuning_value_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("URBANPULSE_INGEST_BATCH_RECORDS", "0")
    with pytest.raises(SettingsError, match="URBANPULSE_INGEST_BATCH_RECORDS"):
        load_settings()


def test_the_worker_s_own_defaults_are_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Tests and benches build a WorkerConfig directly: its defaults must be the settings', or
    # `urbanpulse ingest` and a worker built by hand would be tuned differently (a literal
    # written back into WorkerConfig fails here).
    monkeypatch.chdir(tmp_path)
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerConfig)}
    converted = dataclasses.asdict(_config(load_settings()))
    tuned = {f.name for f in dataclasses.fields(IngestSettings)} & set(defaults)
    assert tuned  # the views share names with the worker's fields
    assert {name: converted[name] for name in tuned} == {name: defaults[name] for name in tuned}
