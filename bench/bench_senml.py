"""SenML decoding speed: ``gateway.senml.decode`` against bare parsers, records per second.

Builds a fixed corpus of 50-record packs in the shapes our gateways send (one sensor many times;
many sensors and quantities once each; a device mixing numbers, booleans, strings and sums;
a clockless node with relative times), then times on one core, in the same run:

  (a) gateway.senml.decode: decode + resolve + validate, what ingestion calls;
  (b) orjson.loads + a minimal resolve loop (bn+n, bt+t, v): the least a Python consumer does;
  (c) msgspec typed decoding into a list of Structs alone: no resolution, no validation;
  (d) the careful path alone (gateway.senml._careful): what a pack costs off the fast path.

Targets: (a) >= 1,000,000 records/s, and (a) >= 0.5 x (b). Prints PASS/FAIL for each and exits 0:
a benchmark reports, it does not gate.

    .venv/bin/python bench/bench_senml.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.senml import _careful, _fast, decode

try:
    import orjson
except ImportError:  # the dev extra; the gateway install does not have it
    orjson = None  # type: ignore[assignment]

RECORDS_PER_PACK = 50
RECEIVED_AT = 1_700_000_000.0
TARGET_RATE = 1_000_000
TARGET_RATIO = 0.5


def build_corpus(packs: int, seed: int = 8428) -> list[bytes]:
    """Return ``packs`` deterministic SenML packs of 50 records, four shapes in turn."""
    rng = random.Random(seed)
    corpus = []
    for i in range(packs):
        t0 = 1_700_000_000 + 60 * i
        shape = i % 4
        if shape == 0:  # one water-flow meter, one reading a minute
            records: list[dict[str, Any]] = [
                {
                    "bn": f"wat-dma-{i % 500:04d}/",
                    "bt": t0,
                    "bu": "m3/s",
                    "n": "flow",
                    "v": round(rng.uniform(0, 0.5), 3),
                }
            ]
            records += [
                {"n": "flow", "t": 60 * k, "v": round(rng.uniform(0, 0.5), 3)}
                for k in range(1, RECORDS_PER_PACK)
            ]
        elif shape == 1:  # a substation gateway: many meters and quantities, each once
            quantities = [("power", "kW"), ("voltage", "V"), ("current", "A"), ("temp", "Cel")]
            records = []
            for k in range(RECORDS_PER_PACK):
                quantity, unit = quantities[k % 4]
                record = {
                    "n": f"ene-sub-{(i * 13 + k // 4) % 800:04d}/{quantity}",
                    "u": unit,
                    "v": round(rng.uniform(0, 400), 2),
                }
                records.append({"bn": "city/", "bt": t0, **record} if k == 0 else record)
        elif shape == 2:  # a waste bin: fill level, lid switch, firmware string, energy sum
            records = [
                {"bn": f"wst-bin-{i % 300:04d}/", "bt": t0, "n": "fill", "u": "%", "v": 40.5}
            ]
            for k in range(1, RECORDS_PER_PACK):
                if k % 10 == 0:
                    records.append({"n": "fw", "t": k, "vs": "2.4.1"})
                elif k % 5 == 0:
                    records.append({"n": "lid_open", "t": k, "vb": k % 2 == 0})
                elif k % 7 == 0:
                    records.append({"n": "energy", "u": "J", "t": k, "s": 1000.0 + k})
                else:
                    records.append(
                        {"n": "fill", "u": "%", "t": k, "v": round(rng.uniform(0, 100), 1)}
                    )
        else:  # an air-quality node without a clock: times relative to reception
            records = [
                {
                    "bn": f"air-aq-{i % 200:04d}:",
                    "bu": "ug/m3",
                    "n": "pm25",
                    "t": -590,
                    "v": round(rng.uniform(0, 80), 1),
                }
            ]
            records += [
                {
                    "n": ("pm25", "pm10")[k % 2],
                    "t": -590 + 10 * (k // 2),
                    "v": round(rng.uniform(0, 80), 1),
                }
                for k in range(1, RECORDS_PER_PACK)
            ]
        corpus.append(msgspec.json.encode(records))
    return corpus


def orjson_minimal(payload: bytes, received_at: float) -> list[tuple[str, float, Any]]:
    """(b): parse with orjson, resolve bn+n, bt+t (relative to received_at) and v. No checks."""
    out: list[tuple[str, float, Any]] = []
    append = out.append
    bn = ""
    bt = 0.0
    for d in orjson.loads(payload):
        bn = d.get("bn", bn)
        bt = d.get("bt", bt)
        t = bt + d.get("t", 0.0)
        append((bn + d.get("n", ""), t + received_at if t < 268435456 else t, d.get("v")))
    return out


class _Struct(msgspec.Struct, gc=False):
    bn: str | None = None
    bt: float | None = None
    bu: str | None = None
    bv: float | None = None
    bs: float | None = None
    bver: int | None = None
    n: str | None = None
    u: str | None = None
    v: float | None = None
    vs: str | None = None
    vb: bool | None = None
    vd: str | None = None
    s: float | None = None
    t: float | None = None
    ut: float | None = None


_typed = msgspec.json.Decoder(list[_Struct]).decode


def msgspec_typed(payload: bytes, received_at: float) -> list[_Struct]:
    """(c): typed decoding alone."""
    return _typed(payload)


def measure(
    fn: Callable[[bytes, float], list[Any]], corpus: list[bytes], repeats: int
) -> tuple[float, float]:
    """Return (best, median) records per second over ``repeats`` passes of the corpus."""
    records = sum(len(fn(payload, RECEIVED_AT)) for payload in corpus)  # also warms caches
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for payload in corpus:
            fn(payload, RECEIVED_AT)
        rates.append(records / (time.perf_counter() - start))
    return max(rates), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer packs, passes)")
    args = parser.parse_args()
    packs, repeats = (100, 5) if args.quick else (1000, 15)

    if hasattr(os, "sched_setaffinity"):  # one core, the one we start on
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    corpus = build_corpus(packs)
    for payload in corpus:  # every pack must take the fast path, or (a) measures a mixture
        assert _fast.decode(payload, RECEIVED_AT) == _careful.decode(payload, RECEIVED_AT)

    contenders: list[tuple[str, Callable[[bytes, float], list[Any]]]] = [
        ("(a) gateway.senml.decode", decode),
    ]
    if orjson is not None:
        contenders.append(("(b) orjson.loads + minimal resolve", orjson_minimal))
    contenders += [
        ("(c) msgspec typed decode only", msgspec_typed),
        ("(d) careful path only", _careful.decode),
    ]
    results = {name: measure(fn, corpus, repeats) for name, fn in contenders}

    print(
        f"SenML decode, {packs} packs x {RECORDS_PER_PACK} records, best of {repeats}, "
        f"one core; Python {platform.python_version()}, msgspec {msgspec.__version__}"
        + (f", orjson {orjson.__version__}" if orjson is not None else "")
    )
    print(f"{'':38} {'best rec/s':>12} {'median rec/s':>13} {'ns/rec':>7}")
    for name, (best, median) in results.items():
        print(f"{name:38} {best:12,.0f} {median:13,.0f} {1e9 / best:7.0f}")

    ours = results["(a) gateway.senml.decode"][0]
    verdict = "PASS" if ours >= TARGET_RATE else "FAIL"
    print(f"target (a) >= {TARGET_RATE:,} rec/s: {verdict} ({ours:,.0f})")
    if orjson is not None:
        ratio = ours / results["(b) orjson.loads + minimal resolve"][0]
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        print(f"target (a) >= {TARGET_RATIO} x (b): {verdict} (ratio {ratio:.2f})")
    else:
        print("target (a) >= 0.5 x (b): not measured (orjson is not installed)")


if __name__ == "__main__":
    main()
