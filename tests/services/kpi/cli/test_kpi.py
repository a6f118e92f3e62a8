"""``urbanpulse kpi`` against a real database: show, targets, baselines, refresh."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from services.kpi.cli.kpi import app

from ..conftest import City


def _run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--database-url", database_url])
    return result.exit_code, result.output


def test_show_targets_baseline_and_refresh(city: City, database_url: str) -> None:
    city.district("d1")
    meter = city.sensor("em-1", "electricity_meter", "d1")
    city.sensor("em-2", "electricity_meter", "d1")
    city.write([(meter, "energy", datetime(2026, 3, 2, 5, tzinfo=UTC), 1.0)])
    day = ["--start", "2026-03-02", "--end", "2026-03-03"]

    code, out = _run(database_url, "show", "ICT-1", *day)
    # 1 of 2 meters: 50 %, a warning against 80 / 50.
    assert code == 0, out
    assert "50.00" in out
    assert "warning" in out

    code, out = _run(database_url, "targets", "set", "ICT-1", "--target", "50", "--warning", "40")
    assert code == 0, out
    code, out = _run(database_url, "show", "ICT-1", *day)
    assert "met" in out

    code, out = _run(database_url, "targets", "set", "ICT-1", "--target", "50", "--warning", "60")
    assert code == 1
    assert "bad side" in out

    code, out = _run(database_url, "baseline", "set", *day, "--kpi", "ICT-1")
    assert code == 0, out
    assert "recorded 2 baselines" in out
    code, out = _run(database_url, "baseline", "show")
    assert "ICT-1" in out
    assert "d1" in out

    code, out = _run(database_url, "show", "NOPE-1", *day)
    assert code == 1
    assert "unknown KPI" in out


@pytest.mark.parametrize("args", [["show", "ICT-1", "--start", "2026-03-02"]])
def test_show_needs_both_ends(city: City, database_url: str, args: list[str]) -> None:
    code, out = _run(database_url, *args)
    assert code == 2
    assert "--start and --end" in out
