"""``urbanpulse city`` and ``urbanpulse district`` against a real database: show, set with units,
unset, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from services.kpi.engine import load_settings
from services.storage.cli.settings import city_app, district_app

ROOT = Path(__file__).resolve().parents[4]
Conn = psycopg.Connection[tuple[object, ...]]


def _run(app: object, database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--database-url", database_url])  # type: ignore[arg-type]
    return result.exit_code, result.output


def test_city_settings_are_shown_set_and_unset(db: Conn, database_url: str) -> None:
    code, out = _run(city_app, database_url, "show", "--json")
    assert code == 0, out
    shown = {row["name"]: row for row in json.loads(out)}
    assert shown["peak_periods"]["source"] == "default"

    code, out = _run(city_app, database_url, "set", "sustained_outage_s", "3 min")
    assert (code, out.strip()) == (0, "sustained_outage_s = 180 s (3 min)")
    code, out = _run(city_app, database_url, "set", "peak_periods", "07:00-09:30,16:00-18:30")
    assert code == 0, out
    code, out = _run(city_app, database_url, "set", "major_road_classes", '["major", "trunk"]')
    assert code == 0, out
    settings = load_settings(db)
    assert settings.sustained_outage_s == 180.0
    assert settings.major_road_classes == ("major", "trunk")
    assert [(str(a), str(b)) for a, b in settings.peak_periods] == [
        ("07:00:00", "09:30:00"),
        ("16:00:00", "18:30:00"),
    ]
    code, out = _run(city_app, database_url, "show")
    assert code == 0
    assert "07:00-09:30" in out

    code, out = _run(city_app, database_url, "unset", "sustained_outage_s")
    assert (code, out.strip()) == (0, "sustained_outage_s = 300 s (5 min) (default)")
    assert load_settings(db).sustained_outage_s == 300.0


def test_a_bad_city_setting_exits_2_with_the_reason_and_changes_nothing(
    db: Conn, database_url: str
) -> None:
    refusals = {
        ("sustained_outage_s", "5"): "give the unit",
        ("grid_renewable_fraction", "30"): "0 to 1 (0 to 100 %)",
        ("timezone", "Europe/Atlantis"): "not a known IANA time zone",
        ("colour", "red"): "unknown setting",
        ("major_road_classes", "[1, 2"): "not JSON",
    }
    for (name, value), reason in refusals.items():
        code, out = _run(city_app, database_url, "set", name, value)
        assert code == 2, (name, out)
        assert reason in out, (name, out)
    assert db.execute("SELECT count(*) FROM city_settings").fetchone() == (0,)


def test_district_overrides_are_shown_set_and_unset(db: Conn, database_url: str) -> None:
    db.execute("INSERT INTO districts (id, name) VALUES ('d1', 'One')")
    db.commit()
    code, out = _run(district_app, database_url, "set", "d1", "overflow_threshold", "90 %")
    assert (code, out.strip()) == (0, "d1: overflow_threshold = 0.9 (90 %)")
    assert db.execute("SELECT reference FROM districts").fetchone() == (
        {"overflow_threshold": 0.9},
    )
    code, out = _run(district_app, database_url, "show", "d1", "--json")
    sources = {row["name"]: row["source"] for row in json.loads(out)}
    assert sources == {
        "peak_periods": "default",
        "overflow_threshold": "district",
        "grid_renewable_fraction": "default",
    }
    for args, reason in {
        ("set", "d1", "timezone", "UTC"): "is a city setting",
        ("set", "d1", "overflow_threshold", "0.1"): "0.5 to 1.2",
        ("set", "nowhere", "overflow_threshold", "90 %"): "no district 'nowhere'",
    }.items():
        code, out = _run(district_app, database_url, *args)
        assert code == 2, (args, out)
        assert reason in out, (args, out)
    code, out = _run(district_app, database_url, "unset", "d1", "overflow_threshold")
    assert (code, out.strip()) == (0, "d1: overflow_threshold = 1 (100 %) (the city's)")
    assert db.execute("SELECT reference FROM districts").fetchone() == ({},)


def test_the_commands_are_urbanpulse_subcommands(database_url: str) -> None:
    env = {"URBANPULSE_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    for command in (["city", "show", "--json"], ["district", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
