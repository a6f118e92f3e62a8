"""``urbanpulse senml``: the field engineer's tool for decoding and checking SenML packs.

A thin shell over :mod:`gateway.senml`: reads stdin, writes resolved records as JSON lines to
stdout, or one ``error: <reason> at record <i> (field <f>): <message>`` line to stderr and exit
status 2, so a script can tell a refused pack (2) from success (0).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Annotated

import msgspec
import typer

from gateway import senml
from gateway.errors import SenMLError

EXIT_REFUSED = 2

app = typer.Typer(
    name="senml",
    help="Decode and check SenML (RFC 8428) JSON packs.",
    add_completion=False,
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Decode and check SenML (RFC 8428) JSON packs."""
    # A callback keeps Typer from collapsing a one-command app, so `urbanpulse senml decode`
    # (not `urbanpulse senml`) runs the decoder, and later commands slot in beside it.


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter("must be a finite number of seconds since the Unix epoch")
    return value


@app.command()
def decode(
    received_at: Annotated[
        float | None,
        typer.Option(
            "--received-at",
            metavar="EPOCH",
            callback=_finite,
            help="'Now' for relative times, in seconds since the Unix epoch [default: now].",
        ),
    ] = None,
) -> None:
    """Read a pack on stdin; print its resolved records as JSON lines."""
    payload = sys.stdin.buffer.read()
    now = time.time() if received_at is None else received_at
    try:
        records = senml.decode(payload, now)
    except SenMLError as err:
        # One line, so it survives `2>> log` and grep; the reason code comes first.
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    encode = msgspec.json.Encoder().encode
    out = sys.stdout.buffer
    for record in records:
        out.write(encode(senml.to_resolved(record)))
        out.write(b"\n")
    out.flush()
