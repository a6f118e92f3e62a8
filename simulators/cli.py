"""``urbanpulse simulate``: a simulated city publishing through store-and-forward gateways."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from simulators.city import Manifest, build_manifest, city_named
from simulators.runner import PublisherSink, Simulation, Sink, Stats, run
from simulators.scenario import Scenario, load_scenario
from simulators.settings import SimulatorSettings
from simulators.timespec import Clock, parse_duration, parse_time

app = typer.Typer(
    help="Run a simulated city: sensor models publishing through gateways.",
    no_args_is_help=False,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True, soft_wrap=True)  # hints stay one copyable line


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _register(path: Path) -> None:
    """Load the manifest through the server's CLI, in a subprocess (never an import)."""
    command = [sys.executable, "-m", "services.cli", "registry", "load", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        console.print(f"[red]--register: could not run {' '.join(command)}: {exc}")
        raise typer.Exit(1) from None
    if done.returncode != 0:
        console.print(
            f"[red]--register: `urbanpulse registry load {path}` failed (exit {done.returncode}); "
            "it needs the server extra (pip install 'urbanpulse\\[server]') and a reachable "
            f"database (URBANPULSE_DATABASE_URL).[/red]\n{escape(done.stderr.strip())}"
        )
        raise typer.Exit(1)
    console.print(done.stdout.strip() or f"registered {path}")


def _table(stats: Stats, sink: Sink, speed: float | None) -> Table:
    table = Table(title="urbanpulse simulate", show_header=False)
    table.add_row("simulated time", _iso(stats.sim_time) if stats.sim_time else "-")
    table.add_row("mode", "backfill" if speed is None else f"speed x{speed:g}")
    table.add_row("packs sent", f"{stats.packs:,}")
    table.add_row("readings", f"{stats.records:,}")
    table.add_row("rate", f"{stats.rate():,.0f} readings/s")
    table.add_row("outbox depth", f"{sink.depth():,} packs")
    return table


def _publisher_sink(
    settings: SimulatorSettings, manifest: Manifest, state_dir: Path
) -> PublisherSink:
    """Publishers for the manifest's gateways; with a credentials file, each logs in as itself
    and every gateway without a password is named before anything starts."""
    try:
        passwords = settings.gateway_passwords()
        for gateway in manifest.gateways:
            settings.publisher_options(gateway["id"], passwords)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return PublisherSink(
        state_dir, lambda gateway_id: settings.publisher_options(gateway_id, passwords)
    )


@app.command()
def simulate(  # noqa: PLR0917 - typer maps options to parameters
    seed: Annotated[int, typer.Option(help="Same seed, same city, same readings.")] = 0,
    city: Annotated[
        str, typer.Option(help="small (200 sensors), large (2,000) or a TOML file.")
    ] = "small",
    speed: Annotated[float, typer.Option(help="1 = real time; 60 = an hour a minute.")] = 1.0,
    start: Annotated[
        str, typer.Option(help="Live runs: first simulated time (ISO, +2h, -1d).")
    ] = "now",
    duration: Annotated[
        str | None, typer.Option(help="Live runs: stop after this (e.g. 2h).")
    ] = None,
    backfill_from: Annotated[
        str | None, typer.Option(help="Backfill from (ISO, or 7d ago).")
    ] = None,
    backfill_to: Annotated[str, typer.Option(help="Backfill up to (ISO or relative).")] = "now",
    batch: Annotated[str, typer.Option(help="Backfill: history per pack per sensor.")] = "1h",
    scenario: Annotated[
        Path | None, typer.Option(help="TOML file of events and faults.", exists=True)
    ] = None,
    manifest_out: Annotated[Path | None, typer.Option(help="Write the manifest and exit.")] = None,
    register: Annotated[
        bool, typer.Option(help="Load the manifest via `urbanpulse registry load`.")
    ] = False,
    state_dir: Annotated[Path, typer.Option(help="Outbox files, one per gateway.")] = Path(
        ".urbanpulse/simulate"
    ),
    gateway_prefix: Annotated[
        str, typer.Option(help="Gateway ids: <prefix>-<district>-<domain>.")
    ] = "gw",
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for outboxes at the end.")
    ] = 60.0,
    quiet: Annotated[bool, typer.Option(help="No live progress table.")] = False,
) -> None:
    """Simulate a city live, faster than real time, or as a backfill; publish over MQTT."""
    now = time.time()
    pace: float | None
    if backfill_from is not None:
        first = parse_time(backfill_from, now, past=True)
        last: float | None = parse_time(backfill_to, now, past=True)
        pace = None
    else:
        first = parse_time(start, now)
        last = None if duration is None else first + (parse_duration(duration) or 0.0)
        pace = speed
        if speed <= 0:
            raise typer.BadParameter("must be above 0", param_hint="--speed")
    the_city = city_named(city, gateway_prefix)
    # Installed when the simulated history begins, so KPIs do not count the time before as silence.
    manifest = build_manifest(the_city, seed, installed_at=datetime.fromtimestamp(first, UTC))
    if manifest_out is not None or register:
        path = manifest_out or state_dir / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest.json(), indent=1) + "\n")
        console.print(
            f"wrote {path}: {len(manifest.sensors)} sensors, {len(manifest.gateways)} gateways"
        )
        if register:
            _register(path)
        else:
            console.print(f"register it with: urbanpulse registry load {path}")
        if manifest_out is not None:
            return
    else:
        console.print(
            "the ingestion service accepts registered sensors only: "
            "urbanpulse simulate --manifest-out city.json && urbanpulse registry load city.json"
        )

    clock = Clock(the_city.utc_offset_s)
    events = load_scenario(scenario, first, clock) if scenario else Scenario()
    batch_s = parse_duration(batch) if pace is None else None
    simulation = Simulation(manifest, events, seed)

    settings = SimulatorSettings()
    sink = _publisher_sink(settings, manifest, state_dir)
    stop = threading.Event()
    console.print(
        f"{the_city.name}: {len(manifest.sensors)} sensors, {len(manifest.gateways)} gateways, "
        f"broker {settings.mqtt_url}, from {_iso(first)}" + (f" to {_iso(last)}" if last else "")
    )
    try:
        with Live(console=console, refresh_per_second=4, transient=quiet) as live:
            stats = run(
                simulation,
                sink,
                first,
                last,
                speed=pace,
                batch_s=batch_s,
                on_progress=None if quiet else lambda s, k: live.update(_table(s, k, pace)),
                should_stop=stop.is_set,
            )
    except KeyboardInterrupt:
        console.print("interrupted: what was put stays in the outboxes for the next run")
        sink.close()
        raise typer.Exit(130) from None
    drained = sink.drain(drain_timeout)
    sink.close()
    console.print(
        f"sent {stats.packs:,} packs, {stats.records:,} readings "
        f"({stats.rate():,.0f} readings/s)"
        + ("" if drained else f"; some packs still wait in {state_dir} for the broker")
    )
