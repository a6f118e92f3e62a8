"""The committed JSON is exactly what the code generates; the CLI builds and checks it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dashboards import build
from dashboards.cli import app
from services.cli import app as urbanpulse
from services.kpi.catalog import KPIS


def test_committed_json_is_what_the_code_generates() -> None:
    assert build.stale() == [], "run `urbanpulse dashboards build` and commit the result"


def test_build_writes_every_dashboard_and_check_spots_an_edit(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["build", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(
        p.name for p in build.GENERATED.glob("*.json")
    )
    assert runner.invoke(app, ["build", "--out", str(tmp_path), "--check"]).exit_code == 0

    edited = tmp_path / "urbanpulse-water.json"
    edited.write_text(edited.read_text().replace("DMA inflow", "DMA outflow"))
    (tmp_path / "old-board.json").write_text("{}")
    result = runner.invoke(app, ["build", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "old-board.json, urbanpulse-water.json" in result.output


def test_city_overview_has_a_stat_per_kpi_coloured_by_its_band() -> None:
    model = json.loads((build.GENERATED / "urbanpulse-city.json").read_text())
    stats = {p["title"].split()[0]: p for p in build.panels(model) if p["type"] == "stat"}
    assert set(stats) == set(KPIS)
    # NO2: lower is better, met below 25, warning to 50 (WHO 2021, KPIS.md).
    steps = stats["AIR-3"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [
        {"value": None, "color": "green"},
        {"value": 25.0, "color": "orange"},
        {"value": 50.0, "color": "red"},
    ]
    # ICT-1: higher is better, met from 80, warning from 50.
    steps = stats["ICT-1"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 50.0, 80.0]
    assert [s["color"] for s in steps] == ["red", "orange", "green"]


def test_building_never_loads_grafana_client() -> None:
    """grafana-client's urllib3-future breaks requests-based tools: only the push loads it."""
    code = (
        "import sys, dashboards.build, dashboards.cli; dashboards.build.dashboards(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'grafana_client', 'niquests', 'urllib3_future'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_urbanpulse_dashboards_is_a_subcommand() -> None:
    result = CliRunner().invoke(urbanpulse, ["dashboards", "build", "--check"])
    assert result.exit_code == 0, result.output
    assert "7 dashboards up to date" in result.output
