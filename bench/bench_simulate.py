"""Simulator speed: readings generated and packed per second, and a month's backfill time.

All on one core, in the same run, for the 2,000-sensor city (``--city large``) with every
sensor forced to a 1-minute interval (the issue's "a month at 1-minute resolution"):

  (a) generate + encode, backfill packing (an hour of one sensor per pack);
  (b) (a) + put into the gateways' outboxes (SQLite WAL, one fsync per pack);
  (c) generate + encode, live packing (one pack per sensor per minute);
  (d) (c) + put into the outboxes: bounded by the outbox's fsync per pack;
  (e) a month's backfill (a) + (b): a simulated day is measured and multiplied by 30
      (stated in the output), and the time for 86.4 M readings at the measured rate.

Target: >= 50,000 readings/s for (a) and (b). Generation and packing only: publishing and
ingestion are measured elsewhere (bench_ingest.py). Prints a table and exits 0.

    .venv/bin/python bench/bench_simulate.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulators.city import build_manifest, large_city
from simulators.runner import OutboxSink, Pack, Simulation, run

TARGET = 50_000
START = 1_750_000_000 // 3600 * 3600
MONTH_READINGS = 86_400_000  # 2,000 sensors x 43,200 minutes


class CountingSink:
    """Takes packs and drops them: measures generation and encoding alone."""

    def __init__(self) -> None:
        self.bytes = 0

    def put(self, pack: Pack) -> None:
        self.bytes += len(pack.payload)

    def depth(self) -> int:
        return 0

    def close(self) -> None:
        pass


def measure(sim: Simulation, sink: object, hours: float, batch_s: float) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    stats = run(sim, sink, START, START + hours * 3600, batch_s=batch_s)  # type: ignore[arg-type]
    return stats.records, stats.packs, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer simulated hours")
    args = parser.parse_args()
    hours = 2.0 if args.quick else 6.0
    day_hours = 4.0 if args.quick else 24.0

    manifest = build_manifest(large_city(), seed=0)
    sim = Simulation(manifest, seed=0, interval_s=60)
    print(
        f"# bench_simulate: {len(manifest.sensors)} sensors at 60 s, "
        f"python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}"
    )
    rows: list[tuple[str, int, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("(a) generate+encode, 1 h packs", *measure(sim, CountingSink(), hours, 3600)))
        outboxes = OutboxSink(Path(tmp) / "b")
        rows.append(("(b) (a) + outbox put", *measure(sim, outboxes, hours, 3600)))
        outboxes.close()
        rows.append(
            ("(c) generate+encode, 1 pack/min", *measure(sim, CountingSink(), hours / 2, 60))
        )
        outboxes = OutboxSink(Path(tmp) / "d")
        rows.append(("(d) (c) + outbox put", *measure(sim, outboxes, 0.25, 60)))
        outboxes.close()
        day = OutboxSink(Path(tmp) / "e")
        day_records, day_packs, day_seconds = measure(sim, day, day_hours, 3600)
        day.close()

    print(f"{'case':36} {'readings':>12} {'packs':>9} {'seconds':>8} {'readings/s':>12}  target")
    for name, records, packs, seconds in rows:
        rate = records / seconds
        verdict = ("PASS" if rate >= TARGET else "FAIL") if name[:3] in {"(a)", "(b)"} else "-"
        print(f"{name:36} {records:>12,} {packs:>9,} {seconds:>8.2f} {rate:>12,.0f}  {verdict}")
    scale = 24.0 / day_hours * 30
    month_s = day_seconds * scale
    rate = day_records / day_seconds
    print(
        f"\n(e) backfill into outboxes: {day_hours:g} simulated h measured "
        f"({day_records:,} readings, {day_packs:,} packs, {day_seconds:.1f} s, "
        f"{rate:,.0f} readings/s);\n    a month of this city (x{scale:g}, extrapolated): "
        f"{day_records * scale / 1e6:,.1f} M readings in {month_s / 60:.1f} min;"
        f"\n    86.4 M readings at that rate: {MONTH_READINGS / rate / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
