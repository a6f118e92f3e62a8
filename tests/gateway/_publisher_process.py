"""A gateway publisher in a process of its own, for the tests that kill it with SIGKILL.

``python -m tests.gateway._publisher_process OUTBOX HOST PORT GATEWAY_ID WINDOW FREEZE_AFTER``
publishes what is in the outbox file, prints ``connected`` once the broker took the connection,
and runs until it is killed. With ``FREEZE_AFTER`` above 0 it stops itself (SIGSTOP, every thread
at once) once that many packs were acknowledged: a local broker drains thousands of packs a
second, faster than a test can react, so this pins the kill to the middle of the stream.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from gateway.outbox import Outbox
from gateway.publisher import Publisher, PublisherOptions


def main(argv: list[str]) -> None:
    path, host, port, gateway_id, window, freeze_after = argv
    outbox = Outbox(Path(path))
    options = PublisherOptions(
        gateway_id=gateway_id,
        host=host,
        port=int(port),
        window=int(window),
        backoff_initial=0.05,
        backoff_max=0.5,
        receipts=False,  # no platform behind the tests that use this
    )
    publisher = Publisher(outbox, options)
    publisher.start()
    if not publisher.wait_until(lambda health: health.connected, timeout=10):
        sys.exit(f"not connected: {publisher.health().last_error}")
    print("connected", flush=True)
    if int(freeze_after) > 0:
        publisher.wait_until(lambda health: health.acknowledged >= int(freeze_after), 30)
        os.kill(os.getpid(), signal.SIGSTOP)
    threading.Event().wait()  # until SIGKILL: the point is to die without a goodbye


if __name__ == "__main__":
    main(sys.argv[1:])
