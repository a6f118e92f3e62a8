"""``urbanpulse quarantine``: list, show and replay quarantined messages and records.

Everything a sender put in an entry (topic, detail, payload) is shown as plain text with its
control characters escaped, never as rich markup: a payload must not restyle, or rewrite, the
operator's terminal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway import topics
from gateway.errors import SenMLError, TopicError
from gateway.senml import Record
from services.cli_support import settings_for_command
from services.storage import quarantine
from services.storage.quarantine import QuarantineFilter
from services.storage.urls import libpq_url

from ..quarantine import replay as replay_entries
from ..salvage import decode_salvaging
from ..validate import Reason, policy

app = typer.Typer(
    help="List, show and replay quarantined messages and records.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]
ReasonOption = Annotated[Reason | None, typer.Option(help="only entries with this reason")]
DETAIL_WIDTH = 60  # characters of the detail shown in a list; `show` prints all of it
_AGO = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@contextmanager
def _connect(url: str) -> Iterator[quarantine.Conn]:
    """A connection; a database error becomes a one-line message and exit status 1."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
            yield conn
    except psycopg.Error as exc:
        errors.print(Text(str(exc).strip(), style="red"))
        raise typer.Exit(1) from None


def _when(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC when no offset is given) or an age such as 30m, 12h or 7d."""
    if text is None:
        return None
    ago = _AGO.fullmatch(text.strip())
    if ago:
        seconds = int(ago[1]) * _UNIT_SECONDS[ago[2]]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            "expected an ISO 8601 time (2024-05-01T12:00) or an age (30m, 12h, 7d)",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clean(text: str | None) -> Text:
    """Sender-controlled text as plain text, control characters escaped (``\\x1b``)."""
    if text is None:
        return Text("-", style="dim")
    return Text("".join(c if c.isprintable() else ascii(c)[1:-1] for c in text))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def payload_text(payload: bytes) -> str | None:
    """The payload as text when it is UTF-8 with no control character but newlines and tabs."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\n\t" for c in text):
        return text
    return None


def hex_dump(data: bytes, width: int = 16) -> str:
    """Offset, bytes in hex and their printable ASCII, ``width`` bytes a line (``hexdump -C``)."""
    lines = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<{width * 3 - 1}}  |{text}|")
    return "\n".join(lines)


@app.command("list")
def list_(
    *,
    reason: ReasonOption = None,
    gateway: Annotated[str | None, typer.Option(help="only messages from this gateway")] = None,
    sensor: Annotated[str | None, typer.Option(help="only records of this sensor")] = None,
    since: Annotated[
        str | None, typer.Option(help="received at or after: ISO 8601 (UTC) or an age (12h)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="received before: ISO 8601 (UTC) or an age (30m)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="show at most this many, newest first")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="include entries already replayed")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """List quarantined entries, newest first, and count them by reason."""
    _, url = settings_for_command(database_url)
    which = QuarantineFilter(
        reason=reason.value if reason else None,
        gateway=gateway,
        sensor=sensor,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        include_replayed=all_,
    )
    with _connect(url) as conn:
        entries = quarantine.list_entries(conn, which, limit=limit)
        counts = quarantine.summary(conn, which)
    table = Table("id", "received (UTC)", "gateway", "sensor", "index", "reason", "detail")
    if all_:
        table.add_column("replayed")
    for entry in entries:
        detail = entry.detail
        if len(detail) > DETAIL_WIDTH:
            detail = detail[: DETAIL_WIDTH - 1] + "…"
        cells: list[str | Text] = [
            str(entry.id),
            _stamp(entry.received_at),
            clean(entry.gateway_id),
            clean(entry.sensor_id),
            "whole" if entry.record_index is None else str(entry.record_index),
            entry.reason,
            clean(detail),
        ]
        if all_:
            cells.append(_stamp(entry.replayed_at) if entry.replayed_at else "")
        table.add_row(*cells)
    total = sum(counts.values())
    if entries:
        console.print(table)
    by_reason = ", ".join(f"{name} {count}" for name, count in counts.items())
    shown = f" (showing {len(entries)})" if len(entries) < total else ""
    console.print(
        f"{total} entr{'y' if total == 1 else 'ies'}{shown}" + (f": {by_reason}" if total else ""),
        markup=False,
    )


@app.command()
def show(
    entry_id: Annotated[int, typer.Argument(metavar="ID", help="the entry's id (see `list`)")],
    max_bytes: Annotated[
        int, typer.Option(min=0, help="hex-dump at most this many bytes (0: all)")
    ] = 4096,
    database_url: DatabaseOption = None,
) -> None:
    """Show one entry: every field, the raw payload, and what decoding makes of it."""
    _, url = settings_for_command(database_url)
    with _connect(url) as conn:
        entry = quarantine.get(conn, entry_id)
    if entry is None:
        errors.print(f"no quarantine entry with id {entry_id}")
        raise typer.Exit(2)
    fields = Table(show_header=False, box=None)
    fields.add_row("id", str(entry.id))
    fields.add_row("received", f"{_stamp(entry.received_at)} UTC")
    fields.add_row("topic", clean(entry.topic))
    fields.add_row("gateway", clean(entry.gateway_id))
    fields.add_row("sensor", clean(entry.sensor_id))
    fields.add_row(
        "record index",
        "whole message" if entry.record_index is None else str(entry.record_index),
    )
    fields.add_row("reason", entry.reason)
    fields.add_row("detail", clean(entry.detail))
    fields.add_row("replayed", f"{_stamp(entry.replayed_at)} UTC" if entry.replayed_at else "no")
    fields.add_row("payload", f"{len(entry.payload)} bytes")
    console.print(fields)
    text = payload_text(entry.payload)
    if text is not None:
        console.print("\npayload (UTF-8 text):", style="bold")
        console.print(Text(text), soft_wrap=True)
    else:
        shown = entry.payload if max_bytes == 0 else entry.payload[:max_bytes]
        console.print("\npayload (not UTF-8 text; hex dump):", style="bold")
        console.print(Text(hex_dump(shown)), soft_wrap=True)
        if len(shown) < len(entry.payload):
            console.print(f"... {len(entry.payload) - len(shown)} more bytes (--max-bytes 0)")
    _print_decoded(entry)


def _print_decoded(entry: quarantine.Entry) -> None:
    try:
        channel = topics.parse_topic(entry.topic).channel
    except TopicError:
        channel = None  # a SenML pack sent to a wrong topic is still worth decoding
    if channel == topics.Channel.STATUS:
        return  # a status message is a word, not a pack
    console.print("\ndecoded (times relative to the receive time):", style="bold")
    try:
        salvaged = decode_salvaging(entry.payload, entry.received_at.timestamp())
    except SenMLError as exc:
        console.print(Text(f"not SenML: {exc}", style="red"))
        return
    # The marker, not only the colour, points at the entry's record: output is often piped.
    table = Table("", "index", "name", "time (UTC)", "unit", "value")
    for position, record in enumerate(salvaged.records):
        index = salvaged.original_index(position)
        this = index == entry.record_index
        table.add_row(
            "▶" if this else "",
            str(index),
            clean(record.name),
            datetime.fromtimestamp(record.time, UTC).isoformat(timespec="milliseconds"),
            clean(record.unit),
            clean(_value(record)),
            style="bold yellow" if this else None,
        )
    for bad in salvaged.bad:
        this = bad.index == entry.record_index
        table.add_row(
            "▶" if this else "",
            str(bad.index),
            clean(f"not decodable: {bad.error}"),
            style="bold yellow" if this else "red",
        )
    console.print(table)


def _value(record: Record) -> str:
    if record.value is not None:
        return repr(record.value)
    if record.string_value is not None:
        return repr(record.string_value)
    if record.bool_value is not None:
        return str(record.bool_value).lower()
    if record.data_value is not None:
        return f"{len(record.data_value)} bytes"
    return f"sum {record.sum!r}"


@app.command()
def replay(
    sensor: Annotated[str | None, typer.Option(help="the records of this sensor")] = None,
    reason: ReasonOption = None,
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="this entry (repeat for several)")
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Validate quarantined records again, once their cause is fixed, and store those that pass.

    Give at least one filter; several narrow the choice. Entries already replayed are not
    looked at again; whole messages that are not SenML cannot be replayed and are counted.
    """
    if sensor is None and reason is None and not ids:
        errors.print("give at least one of --sensor, --reason, --id")
        raise typer.Exit(2)
    settings, url = settings_for_command(database_url)
    with _connect(url) as conn:
        result = replay_entries(
            conn,
            sensor_id=sensor,
            reason=reason.value if reason else None,
            ids=ids or None,
            policy=policy(settings),
            now=time.time(),
        )
    console.print(
        f"examined {result.examined}, stored {result.stored}, "
        f"duplicates {result.duplicates}, still bad {len(result.still_bad)}"
        + (
            f", whole messages skipped {result.skipped_whole_messages}"
            if result.skipped_whole_messages
            else ""
        ),
        markup=False,
    )
    if result.still_bad:
        table = Table("id", "reason", "detail", title="still quarantined")
        for bad in result.still_bad:
            table.add_row(str(bad.id), bad.reason, clean(bad.detail))
        console.print(table)
