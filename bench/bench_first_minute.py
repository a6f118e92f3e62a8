"""The first minute of ``urbanpulse up`` (issue 10 §4): how long until a newcomer's screen is
true, on a fresh data directory.

For each tree (this one; with ``--baseline REF`` also the code at a git ref or in a directory,
e.g. the commit before the history import, whose city backfilled over MQTT), in the same run:

1. ``python -m services.cli up --data-dir <fresh>`` with the API on a free port (the database
   and the broker pick theirs), the tree first on ``PYTHONPATH``;
2. as soon as it wrote ``urbanpulse.env`` and its admin key, the API is polled (one request at
   a time, so the poller adds little to the load it measures):
   - ``/v1/kpis/current?period=day``: today's values; a KPI the city supports is one whose city
     value expects sources (``coverage.sources_expected > 0``);
   - per supported KPI, ``/v1/kpis/{id}/series`` by day from the 7th day before today to now
     (every scope): the 7 whole days, yesterday the last (what the console's sparklines ask;
     the end moves with each poll, so the API's 60 s cache never answers an old question);
   - ``/v1/alerts?state=open``: every open alert; one on a KPI is supported when its KPI,
     computed afresh over the period so far, is rated as the alert says with enough coverage,
     and its period lies within the city's data (from the first reading on); a sensor's alert
     is reported with its message.
3. Reported: seconds from the command until ``up`` printed its table, until (a) today's value of
   every supported KPI is rated for every scope that expects sources, (b) each of the last 7
   days' (yesterday's included) are as well, and (c) the open alerts at that moment and at the
   end, each supported or not; at the end, the 7 days as one period (``/values``); with the
   load (``uptime``) before and after. A value rated at the run's end is a target (today's of
   this run, the days' of any run: a running day's value may flip); the time is the poll from
   which on every target stays rated.

    .venv/bin/python bench/bench_first_minute.py [--baseline 4ed0d50] [--timeout 240]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from services.storage.urls import libpq_url

ROOT = Path(__file__).resolve().parents[1]
RATED = {"met", "warning", "missed"}
ALERTS_EVERY = 5  # polls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


@contextmanager
def tree_of(ref: str) -> Iterator[Path]:
    """A directory holding the code of ``ref``: itself if it is one, else ``git archive``."""
    if Path(ref).is_dir():
        yield Path(ref).resolve()
        return
    target = Path(tempfile.mkdtemp(prefix="urbanpulse-bench-tree-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def get(self, path: str, **query: Any) -> Any:
        qs = urllib.parse.urlencode(query, doseq=True)
        request = urllib.request.Request(
            f"{self.url}{path}{'?' + qs if qs else ''}", headers={"X-API-Key": self.key}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


@dataclass
class Poll:
    at: float  # seconds since the command
    supported: list[str] = field(default_factory=list)
    # "KPI/scope" (today) and "KPI/scope <day>" (the 7 days before) rated, and those
    # that expect sources but are not rated (with their coverage, to say why).
    today: set[str] = field(default_factory=set)
    week: set[str] = field(default_factory=set)
    unrated: dict[str, str] = field(default_factory=dict)
    alerts: list[dict[str, Any]] | None = None  # None: not looked at in this poll


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sort(
    values: list[dict[str, Any]], what: str, rated: set[str], unrated: dict[str, str]
) -> None:
    """Scopes that expect sources into ``rated`` or ``unrated`` (with their coverage)."""
    for v in values:
        if v["coverage"]["sources_expected"] == 0:
            continue
        name = f"{v['kpi_id']}/{v['scope']}{what}"
        if v["rating"] in RATED:
            rated.add(name)
        else:
            c = v["coverage"]
            unrated[name] = f"{c['sources_used']}/{c['sources_expected']} sources, " + (
                "completeness -"
                if c["completeness"] is None
                else f"completeness {c['completeness']:.2f}"
            )


def judge_alert(api: Api, alert: dict[str, Any], data_from: datetime | None) -> str:
    """Why ``alert`` is supported by the data, or why not (starts with "NOT")."""
    if alert["rule_id"] != "kpi-missed":
        return f"sensor rule {alert['rule_id']}: {alert['message']}"
    kpi_id, scope, period = alert["subject_id"].split("/")
    stored = api.get("/v1/kpis/current", period=period, kpi=kpi_id, scope=scope)["values"]
    if not stored:
        return "NOT: no current value for it"
    start = datetime.fromisoformat(stored[0]["period_start"])
    end = datetime.fromisoformat(stored[0]["period_end"])
    now = datetime.now(UTC).replace(microsecond=0)
    query: dict[str, Any] = {"start": _iso(start), "end": _iso(min(now, end))}
    if scope != "city":
        query.update(district=scope, city="false")
    fresh = [v for v in api.get(f"/v1/kpis/{kpi_id}/values", **query)["values"]]
    fresh = [v for v in fresh if v["scope"] == scope]
    if not fresh:
        return "NOT: the KPI has no value for the scope"
    value = fresh[0]
    if value["rating"] != "missed" or value["coverage"]["quality"] != "ok":
        return f"NOT: recomputed {value['rating']}, coverage {value['coverage']['quality']}"
    # KPIS.md's coverage rule, judged from the data itself (its first reading), not from what
    # the registry says: 75 % of the period (90 % of a year), a running one counted whole.
    judged_from = max(start, data_from or start)
    share = (min(now, end) - judged_from) / (end - judged_from) * value["coverage"]["ratio"]
    needed = 0.9 if end - start >= timedelta(days=365) else 0.75
    if share < needed:
        return (
            f"NOT: recomputed missed, but the data ({_iso(judged_from)} on) covers "
            f"{share:.0%} of the {period}, under {needed:.0%}"
        )
    return f"supported: recomputed {value['value']!r}, missed, data covers {share:.0%}"


def poll(api: Api, started: float, database_url: str, alerts: bool) -> Poll:
    result = Poll(time.monotonic() - started)
    today = api.get("/v1/kpis/current", period="day")["values"]
    if not today:
        return result
    result.supported = sorted(
        {v["kpi_id"] for v in today if v["scope"] == "city" and v["coverage"]["sources_expected"]}
    )
    _sort(today, "", result.today, result.unrated)
    today_start = datetime.fromisoformat(
        next(v for v in today if v["scope"] == "city")["period_start"]
    )
    # Day buckets from the 7th day before today up to now: 7 whole days (yesterday the last),
    # then today so far. The end moves with every poll, so the API's cache never answers.
    now = datetime.now(UTC).replace(microsecond=0)
    days = {"start": _iso(today_start - timedelta(days=7)), "end": _iso(now)}
    for kpi_id in result.supported:
        series = api.get(f"/v1/kpis/{kpi_id}/series", grain="day", **days)["values"]
        whole = [v for v in series if datetime.fromisoformat(v["period_end"]) <= today_start]
        for v in whole:
            _sort([v], f" {v['period_start'][:10]}", result.week, result.unrated)
    if alerts:
        data_from = first_reading(database_url)
        result.alerts = []
        for alert in api.get("/v1/alerts", state="open", limit=100)["items"]:
            result.alerts.append(
                {
                    "id": alert["id"],
                    "subject": alert["subject_id"],
                    "message": alert["message"],
                    "judged": judge_alert(api, alert, data_from),
                }
            )
    return result


def seven_days(api: Api, kpis: list[str]) -> dict[str, str]:
    """Each KPI/scope over the 7 whole days before today, as one period."""
    today = api.get("/v1/kpis/current", period="day")["values"]
    start = datetime.fromisoformat(next(v for v in today if v["scope"] == "city")["period_start"])
    span = {"start": _iso(start - timedelta(days=7)), "end": _iso(start)}
    return {
        f"{v['kpi_id']}/{v['scope']}": v["rating"]
        for kpi_id in kpis
        for v in api.get(f"/v1/kpis/{kpi_id}/values", **span)["values"]
        if v["coverage"]["sources_expected"]
    }


def first_reading(database_url: str) -> datetime | None:
    """When the city's data begins: its earliest stored reading."""
    with psycopg.connect(libpq_url(database_url), connect_timeout=5) as conn:
        row = conn.execute("SELECT min(time) FROM readings").fetchone()
    return row[0] if row else None


@dataclass
class Run:
    name: str
    up_s: float | None = None
    polls: list[Poll] = field(default_factory=list)
    alerts_at_end: list[dict[str, Any]] = field(default_factory=list)
    # The 7 whole days before today as one period, asked once at the end: KPI/scope -> rating.
    seven_days: dict[str, str] = field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""

    def first(self, covers: Callable[[Poll], bool]) -> Poll | None:
        """The first poll from which on every poll ``covers`` (a value that flips back is not
        there yet)."""
        found: Poll | None = None
        for p in self.polls:
            found = (found or p) if covers(p) else None
        return found


def measure(name: str, tree: Path, timeout_s: float, poll_s: float) -> Run:
    """Run ``up`` of ``tree`` on a fresh data directory for ``timeout_s``, polling."""
    run = Run(name, load_before=uptime())
    data_dir = Path(tempfile.mkdtemp(prefix="urbanpulse-first-minute-"))
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin",
        "HOME": str(data_dir),
        "COLUMNS": "200",
        "PYTHONPATH": str(tree),
        "URBANPULSE_API_PORT": str(free_port()),
    }
    log = (data_dir / "up.log").open("w")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data_dir)],
        cwd=tree,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        env_file, key_file = data_dir / "urbanpulse.env", data_dir / "api-key"
        while not (env_file.exists() and key_file.exists()):
            if process.poll() is not None:
                raise SystemExit(f"{name}: up ended: {(data_dir / 'up.log').read_text()}")
            if time.monotonic() - started > timeout_s:
                raise SystemExit(f"{name}: up did not start within {timeout_s} s")
            time.sleep(0.2)
        run.up_s = time.monotonic() - started
        settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        api = Api(settings["URBANPULSE_API_URL"], key_file.read_text().strip())
        database_url = settings["URBANPULSE_DATABASE_URL"]
        while time.monotonic() - started < timeout_s:
            tick = time.monotonic()
            try:
                # The alerts every few polls only: judging them costs requests of their own.
                last = poll(api, started, database_url, alerts=len(run.polls) % ALERTS_EVERY == 0)
            except (urllib.error.URLError, OSError) as exc:
                print(f"  {name}: a poll failed ({exc}); again", flush=True)
                continue
            run.polls.append(last)
            print(
                f"  {name}: {last.at:5.1f} s: today {len(last.today)}, week {len(last.week)} "
                "rated" + ("" if last.alerts is None else f", {len(last.alerts)} open alerts"),
                flush=True,
            )
            time.sleep(max(0.0, poll_s - (time.monotonic() - tick)))
        if run.polls and run.polls[-1].supported:
            run.alerts_at_end = poll(api, started, database_url, alerts=True).alerts or []
            run.seven_days = seven_days(api, run.polls[-1].supported)
    finally:
        run.load_after = uptime()
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return run


def _s(value: float | None) -> str:
    return "not within the timeout" if value is None else f"{value:.1f} s"


def _alerts_after(run: Run, poll: Poll | None) -> tuple[str, list[dict[str, Any]]]:
    """The alerts of the first poll at or after ``poll`` that looked at them."""
    if poll is None:
        return "at (b): never", []
    seen = next((p for p in run.polls if p.at >= poll.at and p.alerts is not None), None)
    if seen is None or seen.alerts is None:
        return "at (b): not looked at after it", []
    return f"at {seen.at:.1f} s (first look after (b))", seen.alerts


def report(run: Run, week_targets: set[str]) -> None:
    """Today's targets: what this run rated at its end (a KPI of a running day may flip);
    yesterday's and the last 7 days': what any run rated at its end (the same days)."""
    print(f"\n== {run.name}")
    print(f"  load before: {run.load_before}")
    print(f"  `up` printed its table        {_s(run.up_s)}")
    if not run.polls:
        print("  no poll answered")
        return
    end = run.polls[-1]
    today = run.first(lambda p: bool(end.today) and end.today <= p.today)
    week = run.first(lambda p: bool(week_targets) and week_targets <= p.week)
    print(
        f"  (a) today rated               {_s(today.at if today else None)}  "
        f"({len(end.today)} KPI/scope)"
    )
    print(
        f"  (b) each of the last 7 days   {_s(week.at if week else None)}  "
        f"({len(week_targets)} KPI/scope/period)"
    )
    print(f"  KPIs the city supports: {len(end.supported)} ({', '.join(end.supported)})")
    rated = [k for k, rating in run.seven_days.items() if rating in RATED]
    print(
        f"  the 7 days before today as one period, at the end: {len(rated)} of "
        f"{len(run.seven_days)} KPI/scope rated"
    )
    for name, rating in sorted(run.seven_days.items()):
        if rating not in RATED:
            print(f"      {name}: {rating}")
    for name, why in sorted(end.unrated.items()):
        print(f"      never rated by the end: {name} ({why})")
    for when, alerts in (
        _alerts_after(run, week),
        ("at the end", run.alerts_at_end),
    ):
        unsupported = [a for a in alerts if a["judged"].startswith("NOT")]
        print(
            f"  (c) open alerts {when}: {len(alerts)}, "
            f"not supported by the data: {len(unsupported)}"
        )
        for alert in alerts:
            print(f"      #{alert['id']} {alert['subject']}: {alert['judged']}")
    print(f"  load after: {run.load_after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a git ref or a directory of the code before")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per run")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    args = parser.parse_args()
    runs = [measure("this tree (history import)", ROOT, args.timeout, args.poll)]
    if args.baseline:
        with tree_of(args.baseline) as tree:
            runs.append(measure(f"baseline {args.baseline}", tree, args.timeout, args.poll))
    week_targets = set().union(*(r.polls[-1].week for r in runs if r.polls))
    for run in runs:
        report(run, week_targets)


if __name__ == "__main__":
    main()
