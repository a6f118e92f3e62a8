"""The quarantine an operator works with: list it, look at one entry, replay what was fixed.

The worker quarantines a record (``record_index`` set) when validation refuses it and a whole
message (``record_index`` NULL) when it is not SenML at all. Once the cause is fixed — the
sensor registered, its kind corrected — :func:`replay` puts the quarantined records through the
same decoding and the same validation the worker uses, and stores those that now pass in one
transaction with marking them replayed: running it twice stores nothing twice.

No Typer here (``quarantine_cli.py`` is the shell); the caller owns the connection.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from gateway.errors import SenMLError
from gateway.senml import Record
from services.storage.modes import storage_mode
from services.storage.writer import ExtraReading, Reading, ReadingWriter

from .registry import SensorDirectory
from .salvage import Salvaged, decode_salvaging
from .validate import Policy, Reason, Sensor, validate

Conn = psycopg.Connection[tuple[object, ...]]

_COLUMNS = sql.SQL(
    "id, received_at, topic, gateway_id, sensor_id, record_index, reason, detail, payload, "
    "replayed_at"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the quarantine table."""

    id: int
    received_at: datetime
    topic: str
    gateway_id: str | None
    sensor_id: str | None
    record_index: int | None  # in the pack as it arrived; None: the whole message
    reason: str
    detail: str
    payload: bytes  # the raw message, as it arrived
    replayed_at: datetime | None


class StillBad(NamedTuple):
    """An entry that replay examined and validation still refuses, with today's reason."""

    id: int
    reason: str
    detail: str


@dataclass(slots=True)
class ReplayResult:
    examined: int = 0  # record entries put through validation again
    stored: int = 0  # readings that were new
    duplicates: int = 0  # readings that passed but were already stored
    still_bad: list[StillBad] = field(default_factory=list)
    skipped_whole_messages: int = 0  # matched, but not SenML at all: nothing to replay


def _where(
    *,
    reason: str | None = None,
    gateway: str | None = None,
    sensor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: Sequence[int] | None = None,
    include_replayed: bool = False,
) -> tuple[sql.Composable, list[Any]]:
    # Only these fixed fragments become SQL text; every value is a bind parameter.
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    for fragment, value in (
        # str(): a Reason member is sent as its code, whatever adapter psycopg picks for enums.
        ("reason = %s", None if reason is None else str(reason)),
        ("gateway_id = %s", gateway),
        ("sensor_id = %s", sensor),
        ("received_at >= %s", since),
        ("received_at < %s", until),
        ("id = ANY(%s)", list(ids) if ids is not None else None),
    ):
        if value is not None:
            clauses.append(sql.SQL(fragment))
            params.append(value)
    if not include_replayed:
        clauses.append(sql.SQL("replayed_at IS NULL"))
    return sql.SQL(" AND ").join(clauses), params


def list_entries(
    conn: Conn,
    *,
    reason: str | None = None,
    gateway: str | None = None,
    sensor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    include_replayed: bool = False,
) -> list[Entry]:
    """The newest ``limit`` entries matching every filter given (not yet replayed, unless asked).

    ``since`` is inclusive and ``until`` exclusive, both on the time the message was received.
    """
    where, params = _where(
        reason=reason,
        gateway=gateway,
        sensor=sensor,
        since=since,
        until=until,
        include_replayed=include_replayed,
    )
    query = sql.SQL("SELECT {} FROM quarantine WHERE {} ORDER BY id DESC LIMIT %s").format(
        _COLUMNS, where
    )
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


def summary(
    conn: Conn,
    *,
    reason: str | None = None,
    gateway: str | None = None,
    sensor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_replayed: bool = False,
) -> dict[str, int]:
    """How many entries match the filters, by reason, the most frequent first (no limit)."""
    where, params = _where(
        reason=reason,
        gateway=gateway,
        sensor=sensor,
        since=since,
        until=until,
        include_replayed=include_replayed,
    )
    query = sql.SQL(
        "SELECT reason, count(*) FROM quarantine WHERE {} GROUP BY reason ORDER BY 2 DESC, 1"
    ).format(where)
    rows = conn.execute(query, params).fetchall()
    return {str(reason_): int(count) for reason_, count in rows}  # type: ignore[call-overload]


def get(conn: Conn, entry_id: int) -> Entry | None:
    """The entry with this id, replayed or not; None when there is none."""
    query = sql.SQL("SELECT {} FROM quarantine WHERE id = %s").format(_COLUMNS)
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, [entry_id]).fetchone()


def record_at(salvaged: Salvaged, record_index: int) -> Record | None:
    """The record that stood at ``record_index`` in the pack as it arrived, if it decoded.

    Positions in ``salvaged.records`` differ from indexes in the pack when records were cut
    out (salvaged) or when the pack holds base-only records; the worker stored the latter.
    """
    for position, record in enumerate(salvaged.records):
        if salvaged.original_index(position) == record_index:
            return record
    return None


def replay(
    conn: Conn,
    *,
    sensor_id: str | None = None,
    reason: str | None = None,
    ids: Sequence[int] | None = None,
    policy: Policy | None = None,
    now: float | None = None,
) -> ReplayResult:
    """Validate again the quarantined records matching every filter given; store those that pass.

    Each record is decoded from its raw message with the message's receive time (so relative
    SenML times resolve as they did) and validated as of that time, against today's registry,
    with the gateway of its topic: a sensor registered since, or a kind corrected since, now
    passes; a sender's clock error stays one. A reading that has since aged past the retention
    window (``policy.max_age_s`` before ``now``) is refused too: its partition is gone or going.

    Readings and the ``replayed_at`` marks are committed together, so an entry is replayed once;
    entries that still fail stay as they are and are returned with their reason of today.
    ``conn`` must not be in autocommit mode (the writer stages rows in its transaction).
    """
    if conn.autocommit:
        raise ValueError("replay needs a connection that is not in autocommit mode")
    now = time.time() if now is None else now
    policy = policy or Policy()
    # Both commit on construction, so they come before the replay's own transaction.
    writer = ReadingWriter(conn, storage_mode(conn))
    sensors = SensorDirectory(conn).snapshot
    result = ReplayResult()
    where, params = _where(reason=reason, sensor=sensor_id, ids=ids)
    try:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM quarantine WHERE {} AND record_index IS NULL").format(
                where
            ),
            params,
        ).fetchone()
        result.skipped_whole_messages = int(row[0]) if row else 0  # type: ignore[call-overload]
        # SKIP LOCKED: a replay running concurrently owns its entries; this one leaves them be.
        query = sql.SQL(
            "SELECT {} FROM quarantine WHERE {} AND record_index IS NOT NULL "
            "ORDER BY id FOR UPDATE SKIP LOCKED"
        ).format(_COLUMNS, where)
        with conn.cursor(row_factory=class_row(Entry)) as cur:
            entries = cur.execute(query, params).fetchall()
        rows: list[Reading] = []
        extras: list[ExtraReading] = []
        passed: list[int] = []
        packs: dict[tuple[str, datetime, bytes], Salvaged | SenMLError] = {}
        for entry in entries:
            outcome = _revalidate(entry, sensors, policy, now, packs)
            if isinstance(outcome, StillBad):
                result.still_bad.append(outcome)
                continue
            rows.extend(outcome[0])
            extras.extend(outcome[1])
            passed.append(entry.id)
        written = writer.write(rows, extras)
        if passed:
            conn.execute("UPDATE quarantine SET replayed_at = now() WHERE id = ANY(%s)", [passed])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    result.examined = len(entries)
    result.stored = written.inserted
    result.duplicates = written.duplicates
    return result


def _revalidate(
    entry: Entry,
    sensors: Mapping[str, Sensor],
    policy: Policy,
    now: float,
    packs: dict[tuple[str, datetime, bytes], Salvaged | SenMLError],
) -> tuple[list[Reading], list[ExtraReading]] | StillBad:
    assert entry.record_index is not None
    if entry.gateway_id is None:  # the worker never writes this; an edited row might
        return StillBad(entry.id, Reason.BAD_TOPIC, "no gateway: the topic was not understood")
    received_at = entry.received_at.timestamp()
    # The bad records of one message share its payload: decode it once per replay.
    key = (entry.topic, entry.received_at, entry.payload)
    pack = packs.get(key)
    if pack is None:
        try:
            pack = decode_salvaging(entry.payload, received_at)
        except SenMLError as exc:
            pack = exc
        packs[key] = pack
    if isinstance(pack, SenMLError):
        return StillBad(entry.id, Reason.NOT_SENML, str(pack))  # str() starts with the reason
    record = record_at(pack, entry.record_index)
    if record is None:
        for bad in pack.bad:
            if bad.index == entry.record_index:
                return StillBad(entry.id, Reason.NOT_SENML, str(bad.error))
        return StillBad(
            entry.id, Reason.NOT_SENML, f"the pack holds no record at index {entry.record_index}"
        )
    checked = validate(entry.gateway_id, [record], sensors, received_at, policy)
    if checked.rejects:
        reject = checked.rejects[0]
        return StillBad(entry.id, reject.reason, reject.detail)
    oldest = now - policy.max_age_s
    if record.time < oldest:
        return StillBad(
            entry.id,
            Reason.TIME_TOO_OLD,
            f"time {record.time:.3f} is past the retention window now (before {oldest:.0f})",
        )
    return checked.rows, checked.extras
