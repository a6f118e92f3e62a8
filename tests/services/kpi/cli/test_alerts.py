"""``urbanpulse alerts`` end to end on a real database, through the top-level command."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from services.cli import app

from ..alerts.conftest import DEFAULTS
from ..conftest import City


def _run(database_url: str, *args: str) -> tuple[int, str]:
    # Wide enough that rich's tables do not fold the ids.
    runner = CliRunner(env={"COLUMNS": "300"})
    result = runner.invoke(app, ["alerts", *args, "--database-url", database_url])
    return result.exit_code, result.output


def test_install_evaluate_list_ack_and_clear(city: City, database_url: str) -> None:
    assert _run(database_url, "install-defaults") == (
        0,
        f"default rules: {len(DEFAULTS)} installed, 0 reset, 0 kept as edited\n",
    )
    code, out = _run(database_url, "install-defaults")
    assert (code, f"{len(DEFAULTS)} kept" in out) == (0, True)
    code, out = _run(database_url, "rules")
    assert code == 0
    assert "waste-fire" in out
    assert "gateway-silent" in out

    city.district("d1")
    key = city.sensor("bin-1", "waste_container", "d1")
    city.write([(key, "temperature", datetime.now(UTC) - timedelta(minutes=2), 95.0)])
    code, out = _run(database_url, "evaluate")
    assert code == 0, out
    assert "raised 1," in out
    code, out = _run(database_url, "list")
    assert "bin-1" in out
    alert_id = city.conn.execute("SELECT id FROM alerts").fetchone()[0]  # type: ignore[index]

    code, out = _run(database_url, "ack", str(alert_id), "--by", "ana", "-m", "crew sent")
    assert code == 0, out
    assert "crew sent" in out
    code, out = _run(database_url, "ack", str(alert_id), "--by", "ben")
    assert (code, "cannot be acknowledged" in out) == (1, True)
    code, out = _run(database_url, "clear", str(alert_id), "--by", "ana")
    assert code == 0, out
    code, out = _run(database_url, "show", str(alert_id))
    assert "cleared" in out
    assert "bin-1" not in _run(database_url, "list")[1]  # open alerts only
    rows = _run(database_url, "list", "--state", "all")[1].splitlines()
    assert len([row for row in rows if "bin-1" in row]) == 1
    code, out = _run(database_url, "show", "999999")
    assert (code, "no alert 999999" in out) == (1, True)


def test_evaluate_loop_stops_on_sigterm(database_url: str) -> None:
    command = [sys.executable, "-m", "services.cli", "alerts", "evaluate", "--loop", "1"]
    with subprocess.Popen(
        [*command, "--database-url", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            lines = [process.stdout.readline(), process.stdout.readline()]  # two evaluations
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0, process.stderr.read()
        finally:
            process.kill()
    assert all("rules 0: raised 0" in line for line in lines), lines
