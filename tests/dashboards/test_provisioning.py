"""The Grafana provisioning files agree with the dashboards: the datasource uid and type the
panels name, the interval floor the query tests assume, the folder the push uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dashboards.push import FOLDER_UID
from dashboards.sql import DATASOURCE_TYPE, DATASOURCE_UID

from .grafana_datasource import parse_interval
from .test_queries import MIN_INTERVAL

PROVISIONING = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "provisioning"


def _load(relative: str) -> Any:
    return yaml.safe_load((PROVISIONING / relative).read_text())


def test_the_datasource_is_the_one_the_panels_name() -> None:
    (source,) = _load("datasources/urbanpulse.yaml")["datasources"]
    assert (source["uid"], source["type"]) == (DATASOURCE_UID, DATASOURCE_TYPE)
    # The query tests expand $__interval with the datasource's minimum, as Grafana would.
    assert parse_interval(source["jsonData"]["timeInterval"]) == MIN_INTERVAL
    assert source["jsonData"]["timescaledb"] is False


def test_the_dashboard_provider_reads_the_generated_json_into_the_push_folder() -> None:
    (provider,) = _load("dashboards/urbanpulse.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["folderUid"] == FOLDER_UID
    assert provider["allowUiUpdates"] is False
