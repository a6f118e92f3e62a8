"""``urbanpulse retention`` and ``urbanpulse erase`` against a real database, both modes."""

from __future__ import annotations

import getpass
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from services.cli import app
from services.storage import erasure, retention
from services.storage.retention_policy import make_policy

from .conftest import City

URBANPULSE = str(Path(sys.executable).parent / "urbanpulse")
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)


def _run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--database-url", database_url])
    return result.exit_code, result.output


def test_set_show_apply_and_unset(city: City, database_url: str) -> None:
    city.district("d1")
    meter = city.sensor("em-1", "electricity_meter", "d1")
    city.write([(meter, "energy", DAY + timedelta(hours=h), float(h)) for h in range(24)])

    code, out = _run(
        database_url, "retention", "set", "kind", "electricity_meter", "--raw-days", "5"
    )
    assert (code, out.strip()) == (0, "kind electricity_meter: raw 5 d")
    code, out = _run(database_url, "retention", "show")
    assert code == 0, out
    assert "electricity_meter" in out
    assert f"cli:{getpass.getuser()}" in out

    # The day, ten days old, is past 5 days: 24 raw rows; the dry run removes none.
    code, out = _run(database_url, "retention", "apply", "--dry-run")
    assert (code, "would remove: raw rows 24;" in out) == (0, True), out
    code, out = _run(database_url, "retention", "apply")
    assert (code, "removed: raw rows 24;" in out) == (0, True), out
    code, out = _run(database_url, "retention", "apply")
    assert (code, "removed: raw rows 0;" in out) == (0, True), out

    code, out = _run(database_url, "retention", "set", "kind", "teapot", "--raw-days", "5")
    assert (code, "name: unknown kind 'teapot'" in out) == (2, True), out
    code, out = _run(
        database_url, "retention", "set", "default", "--raw-days", "400", "--rollup-1m-years", "1"
    )
    assert (code, "rollups may not be kept shorter than raw_days" in out) == (2, True), out
    code, out = _run(database_url, "retention", "unset", "default")
    assert (code, "can be changed, not removed" in out) == (2, True), out
    code, out = _run(database_url, "retention", "unset", "kind", "electricity_meter")
    assert code == 0, out
    code, out = _run(database_url, "retention", "unset", "kind", "electricity_meter")
    assert (code, "no policy for kind 'electricity_meter'" in out) == (1, True), out


def test_apply_every_so_often_until_stopped(city: City, database_url: str) -> None:
    """``--every``: a long-running service (deploy/compose.yaml's ``retention``) that applies
    the policies again and again: a second expired day goes at the next run."""
    city.district("d1")
    meter = city.sensor("em-1", "electricity_meter", "d1")
    retention.set_policy(city.conn, make_policy("kind", "electricity_meter", 5), "test")
    city.conn.commit()

    def raw() -> int:
        row = city.conn.execute("SELECT count(*) FROM readings").fetchone()
        city.conn.commit()
        return int(str(row[0])) if row else -1

    def gone_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while raw() and time.monotonic() < deadline:
            time.sleep(0.2)
        return raw() == 0

    city.write([(meter, "energy", DAY + timedelta(hours=h), float(h)) for h in range(24)])
    service = subprocess.Popen(
        [URBANPULSE, "retention", "apply", "--every", "1", "--database-url", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert gone_within(30)
        city.write([(meter, "energy", DAY - timedelta(days=1), 1.0)])
        assert gone_within(30)
        assert service.poll() is None  # still running
    finally:
        service.terminate()
        output, _ = service.communicate(timeout=15)
    assert "removed: raw rows 24;" in output
    assert "removed: raw rows 1;" in output


def test_erase_a_sensor_and_list_the_audit(city: City, database_url: str) -> None:
    city.district("d1")
    meter = city.sensor("em-1", "electricity_meter", "d1")
    city.write([(meter, "energy", DAY + timedelta(hours=h), float(h)) for h in range(24)])
    span = ["--start", DAY.isoformat(), "--end", (DAY + timedelta(hours=12)).isoformat()]

    code, out = _run(database_url, "erase", "sensor", "em-1", *span, "--reason", "wrong address")
    # Hours 0 to 11: 12 readings; the rollups kept.
    assert code == 0, out
    assert "12 raw rows erased, rollups keep (0 buckets recomputed)" in out
    code, out = _run(
        database_url,
        "erase",
        "sensor",
        "em-1",
        "--start",
        DAY.date().isoformat(),
        "--end",
        (DAY + timedelta(days=1)).date().isoformat(),
        "--reason",
        "again",
        "--rollups",
        "recompute",
    )
    # The 12 hours left; em-1's 24 minutes, 24 hours and its day are replaced (by nothing).
    assert code == 0, out
    assert "12 raw rows erased, rollups recompute (49 buckets recomputed)" in out

    code, out = _run(database_url, "erase", "sensor", "nope", *span, "--reason", "x")
    assert (code, "no sensor 'nope' in the registry" in out) == (1, True), out
    code, out = _run(database_url, "erase", "sensor", "em-1", *span, "--reason", " ")
    assert (code, "reason: say why" in out) == (2, True), out

    code, out = _run(database_url, "erase", "list")
    assert code == 0, out
    assert "wrong address" in out
    assert [a["reason"] for a in erasure.listed(city.conn)] == ["again", "wrong address"]
    assert {a["actor"] for a in erasure.listed(city.conn)} == {f"cli:{getpass.getuser()}"}
