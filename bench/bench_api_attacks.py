"""The API's memory under the request-body and live-stream attacks of issue 11, and the time of
a failed key check.

1. Set up: a temporary embedded PostgreSQL, migrated; 21 service keys; ten sensors and a backlog
   of ``--events`` readings events of ``--readings-per-event`` readings each (the issue's 200 x
   5,000), written through the ingestion write path with live events on.
2. For each tree served (this one; with ``--baseline DIR`` also the code in DIR, e.g. main's
   from ``git archive``), a fresh ``urbanpulse api`` process (one uvicorn worker, as deployed)
   per attack, its RSS read from /proc before (after a warm-up request), at its peak (VmHWM)
   and after:
   a. three concurrent chunked POSTs of ``--body-mb`` MB each to /v1/sensors with a wrong key;
   b. 20 readers, one key each, opening /v1/stream with ``Last-Event-ID: 0`` and reading
      nothing, held ``--hold`` seconds (less than the stall timeout, so the figure is what open
      stalled streams cost, not what is left once they are cut); then one key opening 20.
3. Key checks over HTTP, one at a time: the time of a 401 for an unknown key id against a known
   id with a wrong secret (the failure limiter raised out of the way for this run).

    .venv/bin/python bench/bench_api_attacks.py [--baseline /tmp/main-tree]

Timings and RSS depend on the machine and its load; compare figures of one run only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2 as httpx
import psycopg

from services.api.keys import create_key
from services.devstack.postgres import EmbeddedPostgres
from services.settings import Settings
from services.storage import migrate
from services.storage.modes import storage_mode
from services.storage.urls import libpq_url
from services.storage.writer import ReadingWriter

HERE = Path(__file__).resolve().parent.parent
MB = 1_000_000
STREAMS = 20


# --- 1. set up -----------------------------------------------------------------------------


def seed(url: str, events: int, per_event: int) -> list[str]:
    """Keys (the first is for key-timing) and the event backlog; returns the keys."""
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("INSERT INTO districts (id, name) VALUES ('d01', 'North')")
        sensor_keys = [
            int(
                conn.execute(  # type: ignore[index]
                    "INSERT INTO sensors (id, kind, domain, district_id) "
                    "VALUES (%s, 'water_inflow', 'water', 'd01') RETURNING key",
                    (f"wat-{n}",),
                ).fetchone()[0]
            )
            for n in range(10)
        ]
        keys = [create_key(conn, f"bench {n}", "service")[1] for n in range(STREAMS + 1)]
        conn.commit()
        writer = ReadingWriter(conn, storage_mode(conn), live_events=True)
        start = time.time() - 86_400.0
        for event in range(events):
            rows = [
                (start + event * per_event + i, sensor_keys[i % 10], 1, float(i))
                for i in range(per_event)
            ]
            writer.write(rows)
            conn.commit()
        stored = conn.execute("SELECT count(*), sum(cardinality(readings)) FROM events").fetchone()
    print(f"backlog: {stored[0]} events holding {stored[1]:,} readings")  # type: ignore[index]
    return keys


# --- 2. serve and measure ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in kB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0])
    return figures


@contextmanager
def api(tree: Path, url: str, **env: str) -> Iterator[tuple[str, int]]:
    """``urbanpulse api`` served from ``tree``; yields its base URL and pid."""
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "URBANPULSE_DATABASE_URL": url,
        "URBANPULSE_LOG_LEVEL": "ERROR",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--port", str(port)],
        cwd=tree,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the API of {tree} did not start")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            # uvicorn waits for open streams before it exits; a stalled one does not end.
            process.kill()
            process.wait(20)


class Body:
    """A chunked body of ``total`` bytes, counting what the client handed over."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        piece = b" " * (1024 * 1024)
        while self.sent < self.total:
            self.sent += len(piece)
            yield piece


def body_attack(base: str, pid: int, key: str, body_mb: int) -> dict[str, object]:
    httpx.get(f"{base}/v1/sensors", headers={"X-API-Key": key})  # warm-up, a key checked
    before = memory_kb(pid)["VmRSS"]
    outcomes: list[str] = []
    bodies = [Body(body_mb * MB) for _ in range(3)]

    def post(body: Body) -> None:
        try:
            response = httpx.post(
                f"{base}/v1/sensors",
                content=body,
                headers={"X-API-Key": "nokey.nosecret", "Content-Type": "application/json"},
                timeout=120,
            )
            outcomes.append(str(response.status_code))
        except httpx.TransportError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(2)
    after = memory_kb(pid)
    return {
        "rss_before_mb": before / 1000,
        "rss_peak_mb": after["VmHWM"] / 1000,
        "rss_after_mb": after["VmRSS"] / 1000,
        "answers": dict(Counter(outcomes)),
        "sent_mb": [round(b.sent / MB) for b in bodies],
    }


def stream_attack(base: str, pid: int, keys: list[str], hold_s: float) -> dict[str, object]:
    httpx.get(f"{base}/v1/sensors", headers={"X-API-Key": keys[0]})
    before = memory_kb(pid)["VmRSS"]
    statuses: Counter[int] = Counter()
    peak_during = before
    with ExitStack() as stack:
        for key in keys[1 : STREAMS + 1]:
            response = stack.enter_context(
                httpx.stream(
                    "GET",
                    f"{base}/v1/stream",
                    headers={"X-API-Key": key, "Last-Event-ID": "0"},
                    timeout=httpx.Timeout(30),
                )
            )
            statuses[response.status_code] += 1
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline:
            peak_during = max(peak_during, memory_kb(pid)["VmRSS"])
            time.sleep(0.25)
        # Is the API still answering others while the streams are held?
        t0 = time.perf_counter()
        try:
            other = httpx.get(f"{base}/v1/sensors", headers={"X-API-Key": keys[0]}, timeout=60)
            answer = f"{other.status_code} in {(time.perf_counter() - t0) * 1000:.0f} ms"
        except httpx.TimeoutException:
            answer = "no answer in 60 s"
    time.sleep(2)
    after = memory_kb(pid)
    one_key: Counter[int] = Counter()
    with ExitStack() as stack:
        for _ in range(STREAMS):
            response = stack.enter_context(
                httpx.stream("GET", f"{base}/v1/stream", headers={"X-API-Key": keys[1]}, timeout=30)
            )
            one_key[response.status_code] += 1
    return {
        "rss_before_mb": before / 1000,
        "rss_held_peak_mb": peak_during / 1000,
        "rss_peak_mb": after["VmHWM"] / 1000,
        "rss_after_mb": after["VmRSS"] / 1000,
        "statuses_20_keys": dict(statuses),
        "statuses_one_key": dict(one_key),
        "other_request": answer,
    }


# --- 3. key checks -------------------------------------------------------------------------


def key_timing(base: str, known_id: str, runs: int) -> dict[str, dict[str, float]]:
    """Median and p90 of a refused key check, unknown id vs known id with a wrong secret."""
    times: dict[str, list[float]] = {"unknown id": [], "wrong secret": []}
    with httpx.Client(timeout=30) as client:
        for _ in range(runs):
            for what, key_id in (
                ("unknown id", "up" + secrets.token_hex(6)),
                ("wrong secret", known_id),
            ):
                token = f"{key_id}.{secrets.token_urlsafe(32)}"
                t0 = time.perf_counter()
                response = client.get(f"{base}/v1/sensors", headers={"X-API-Key": token})
                times[what].append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 401, response.text
    return {
        what: {
            "median_ms": statistics.median(values),
            "p90_ms": statistics.quantiles(values, n=10)[-1],
        }
        for what, values in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a tree of the code before (e.g. main)")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--readings-per-event", type=int, default=5_000)
    parser.add_argument("--body-mb", type=int, default=150)
    parser.add_argument("--hold", type=float, default=15.0, help="seconds streams are held")
    parser.add_argument("--key-runs", type=int, default=30)
    args = parser.parse_args()

    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    print(
        "configured caps (defaults): body "
        f"{defaults.api_max_body_bytes:,} B (bulk {defaults.api_max_body_bytes_bulk:,} B); "
        f"streams {defaults.api_stream_max_per_key}/key, {defaults.api_stream_max}/process, "
        f"{defaults.api_stream_page_readings:,} readings a page, stall timeout "
        f"{defaults.api_stream_stall_timeout.total_seconds():g} s, key re-check "
        f"{defaults.api_stream_key_recheck.total_seconds():g} s; "
        f"{defaults.api_auth_failures_max} failed key checks per "
        f"{defaults.api_auth_failures_window.total_seconds():g} s"
    )
    server = EmbeddedPostgres()
    server.start()
    try:
        url = server.app_url()
        migrate.upgrade(url)
        keys = seed(url, args.events, args.readings_per_event)
        known_id = keys[0].partition(".")[0]
        trees = [("this tree", HERE)]
        if args.baseline:
            trees.insert(0, ("baseline", args.baseline.resolve()))
        for name, tree in trees:
            print(f"\n== {name}: {tree}")
            with api(tree, url) as (base, pid):
                figures = body_attack(base, pid, keys[0], args.body_mb)
            print(f"(a) 3 x {args.body_mb} MB POST, wrong key: {figures}")
            with api(tree, url) as (base, pid):
                figures = stream_attack(base, pid, keys, args.hold)
            print(f"(b) {STREAMS} stalled streams from Last-Event-ID 0: {figures}")
            with api(tree, url, URBANPULSE_API_AUTH_FAILURES_MAX="1000000") as (base, _):
                timing = key_timing(base, known_id, args.key_runs)
            print(f"(c) refused key checks over HTTP ({args.key_runs} each): {timing}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
