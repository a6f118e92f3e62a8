"""The monitor's Prometheus metrics, scraped over real HTTP: ``urbanpulse monitor
--metrics-port`` counts its rounds and what they did (checked against what the database holds
afterwards), and a monitor that cannot reach its database counts the errors and no success."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from services.devstack.postgres import free_port
from services.kpi.monitor import Monitor
from services.metrics_http import serve_metrics
from services.monitor.metrics import MonitorMetrics
from services.storage.writer import ReadingWriter
from tests.services.kpi.conftest import City

ROOT = Path(__file__).resolve().parents[3]


def _scrape(url: str) -> dict[str, float]:
    """sample name (with labels) -> value; empty while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def _until(url: str, condition: str, check: object, timeout: float = 30.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = _scrape(url)
        if callable(check) and check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"no {condition} within {timeout}s: {samples}")
        time.sleep(0.1)


def test_the_monitor_command_serves_its_rounds_as_metrics(
    db: psycopg.Connection[tuple[object, ...]], database_url: str, tmp_path: Path
) -> None:
    row = db.execute("SELECT value FROM storage_settings WHERE name = 'mode'").fetchone()
    assert row is not None
    city = City(conn=db, mode=str(row[0]), writer=ReadingWriter(db, str(row[0])))
    city.district("d01")
    station = city.sensor("air-d01-1", "air_quality", "d01", interval_s=60)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    city.series(station, "pm25", start, start + timedelta(hours=1), step_s=60, value=12.0)
    db.commit()

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    before = time.time()
    log = tmp_path / "monitor.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli",
                "monitor",
                "--database-url",
                database_url,
                "--every",
                "1",
                "--metrics-port",
                str(port),
                "--metrics-host",
                "127.0.0.1",
            ],
            env={**os.environ, "URBANPULSE_ENV_FILE": "/nonexistent"},
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        samples = _until(
            url, "two rounds", lambda s: s.get("urbanpulse_monitor_rounds_total", 0) >= 2
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    assert process.returncode == 0, log.read_text()

    kpi_events = db.execute("SELECT count(*) FROM events WHERE type = 'kpi'").fetchone()
    alerts = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE cleared_at IS NULL) FROM alerts"
    ).fetchone()
    db.commit()
    assert kpi_events is not None
    assert alerts is not None
    # Every changed value was stored with its event: the counter and the table agree (the
    # rounds after the first change nothing, so a scrape between rounds still agrees).
    assert samples["urbanpulse_monitor_kpi_values_changed_total"] == kpi_events[0]
    assert samples["urbanpulse_monitor_kpi_values_changed_total"] > 0
    assert samples["urbanpulse_monitor_alerts_raised_total"] == alerts[0]
    assert samples["urbanpulse_monitor_alerts_open"] == alerts[1]
    assert (
        samples["urbanpulse_monitor_round_seconds_count"]
        == samples["urbanpulse_monitor_rounds_total"]
    )
    assert before <= samples["urbanpulse_monitor_last_success_timestamp_seconds"] <= time.time()
    assert samples['urbanpulse_monitor_errors_total{kind="database"}'] == 0
    assert samples['urbanpulse_monitor_errors_total{kind="round"}'] == 0


def test_a_monitor_without_its_database_counts_errors_and_no_success() -> None:
    metrics = MonitorMetrics()
    port = free_port()
    serve_metrics(metrics.registry, "127.0.0.1", port)
    # Nothing listens on this port: every connect is refused at once.
    monitor = Monitor(
        f"postgresql://nobody@127.0.0.1:{free_port()}/none", every_s=1.0, metrics=metrics
    )
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        samples = _until(
            f"http://127.0.0.1:{port}/metrics",
            "database errors",
            lambda s: s.get('urbanpulse_monitor_errors_total{kind="database"}', 0) >= 2,
        )
    finally:
        stop.set()
        thread.join(15)
    assert samples["urbanpulse_monitor_rounds_total"] == 0
    assert samples["urbanpulse_monitor_last_success_timestamp_seconds"] == 0
