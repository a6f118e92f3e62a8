"""What resolving a webhook's host under the delivery deadline costs (services/notify/egress.py):
``egress.resolve`` (getaddrinfo in a thread of its own, waited for until the deadline) against
the baseline of calling getaddrinfo directly, as deliveries did before, in the same run.

    .venv/bin/python bench/bench_webhook_resolve.py [--host localhost] [--lookups 2000]

``localhost`` is answered from /etc/hosts, so what is timed is the thread's cost, not DNS.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable
from statistics import quantiles

from services.notify import egress


def _timed(lookup: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        lookup()
        times.append((time.perf_counter() - started) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()

    def direct() -> object:
        return socket.getaddrinfo(args.host, 443, type=socket.SOCK_STREAM)

    def under_deadline() -> object:
        return egress.resolve(args.host, 443, 10, deadline=time.monotonic() + 10)

    for name, lookup in (("getaddrinfo (baseline)", direct), ("egress.resolve", under_deadline)):
        lookup()  # warm: the first lookup reads /etc/hosts and nsswitch.conf
        times = _timed(lookup, args.lookups)
        p50, p95 = (quantiles(times, n=100)[i] for i in (49, 94))
        print(
            f"{name:24} {args.lookups} lookups of {args.host}: p50 {p50:7.1f} µs  p95 {p95:7.1f} µs"
        )


if __name__ == "__main__":
    main()
