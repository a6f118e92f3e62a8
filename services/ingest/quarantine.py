"""The quarantine's pure rules: which entries a message makes and how many at most, how a
history import's entries are named, and what a replay decides. Every statement on the
quarantine's tables (store, list, summary, prune, and a replay's claim and marks) is
``services.storage.quarantine``'s, the tables' one owner, which the worker, the maintenance loop,
the importer, the API and the CLI call.

The worker quarantines a record (``record_index`` set) when validation refuses it and a whole
message (``record_index`` NULL) when it is not SenML at all. A message's raw bytes are stored
once (``quarantine_messages``) however many of its records are refused, and one message makes
at most ``max_entries`` entries plus one counting the rest (``too_many_rejects``): a pack of
10,000 unknown sensors' records once made 10,000 rows each holding a copy of it, 4.5 GB.

Once the cause is fixed — the sensor registered, its kind corrected — :func:`replay` puts the
quarantined records through the same decoding and the same validation the worker uses, and
stores those that now pass in one transaction with marking them replayed: running it twice
stores nothing twice. A ``conflict`` stays: its reading's key holds another value, which only
an operator may replace. A history import's entries replay the same way, validated as the
import validates (no gateway to answer to).

No Typer here (``cli/quarantine.py`` is the shell); the caller owns the connection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from gateway.errors import SenMLError
from gateway.senml import Record
from services.storage import quarantine as table
from services.storage.modes import storage_mode
from services.storage.quarantine import Conn, Entry, QuarantineFilter
from services.storage.writer import ExtraReading, Reading, ReadingWriter, conflict_owners

from .salvage import Salvaged, decode_salvaging
from .sensor_directory import SensorDirectory
from .validate import Policy, Reason, Sensor, validate

# A history import's entries (services.dataio.importer): topic ``import:<file>:<line>``, no
# gateway, and a SenML pack as payload (a JSON line as it was; a CSV or Parquet row as the
# record it became, so that a replay needs neither the file's header nor its options).
IMPORT_TOPIC = "import:"
# The gateway an import validates under: no sensor's gateway is checked against it.
IMPORT_GATEWAY = "import"


def import_topic(source: str, line: int) -> str:
    return f"{IMPORT_TOPIC}{source}:{line}"


def import_view(sensors: Mapping[str, Sensor]) -> dict[str, Sensor]:
    """The registry as an engineer's file sees it: every sensor, no gateway to answer to."""
    return {key: replace(sensor, gateway_id=None) for key, sensor in sensors.items()}


@dataclass(frozen=True, slots=True)
class Rejected:
    """One entry to make: a record (``index`` set) or the whole message (``index`` None)."""

    gateway_id: str | None
    sensor_id: str | None
    index: int | None
    reason: str
    detail: str
    # A ``too_many_rejects`` entry's counts by reason and first index, so that bounding a
    # message's entries again (conflicts found at the write) counts what it left out.
    summarised: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    first_index: int | None = field(default=None, compare=False)


@dataclass(slots=True)
class Quarantined:
    """A message with what of it is quarantined; its bytes are stored once for all entries."""

    received_at: float
    topic: str
    payload: bytes
    entries: list[Rejected] = field(default_factory=list)
    size: int | None = None  # of the message, when ``payload`` keeps only its start


def bounded(entries: list[Rejected], max_entries: int) -> list[Rejected]:
    """``entries`` when at most ``max_entries``; else the first ``max_entries`` and one whole-
    message entry counting the rest by reason, so one message costs a bounded number of rows."""
    if len(entries) <= max_entries:
        return entries
    rest = entries[max_entries:]
    counts: dict[str, int] = {}
    first: int | None = None
    for entry in rest:
        for reason, count in entry.summarised or ((entry.reason, 1),):
            counts[reason] = counts.get(reason, 0) + count
        if first is None:
            first = entry.first_index if entry.summarised else entry.index
    by_reason = ", ".join(f"{reason} {count}" for reason, count in counts.items())
    return [
        *entries[:max_entries],
        Rejected(
            rest[0].gateway_id,
            None,
            None,
            Reason.TOO_MANY_REJECTS,
            f"{sum(counts.values())} more rejected records not itemised ({by_reason})"
            + (f"; the first at index {first}" if first is not None else "")
            + f"; a message gets at most {max_entries} entries",
            summarised=tuple(counts.items()),
            first_index=first,
        ),
    ]


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
    window of its series (its retention policy, from ``now``) is refused too: it would not be kept.

    Readings and the ``replayed_at`` marks are committed together, so an entry is replayed once;
    entries that still fail stay as they are and are returned with their reason of today.
    An import's entry (topic ``import:<file>:<line>``) is validated as the import validated
    it: under no gateway, so no sensor's gateway is checked; the same retention, from the
    import's time and from ``now``, and no other age limit. One replay serves both origins.

    ``conn`` must not be in autocommit mode (the writer stages rows in its transaction).
    """
    if conn.autocommit:
        raise ValueError("replay needs a connection that is not in autocommit mode")
    now = time.time() if now is None else now
    policy = policy or Policy()
    # Both commit on construction, so they come before the replay's own transaction.
    writer = ReadingWriter(conn, storage_mode(conn))
    sensors = SensorDirectory(conn).snapshot
    registries = {False: sensors, True: import_view(sensors)}
    result = ReplayResult()
    which = QuarantineFilter(
        reason=reason, sensor=sensor_id, ids=None if ids is None else tuple(ids)
    )
    try:
        claimed = table.claim_records(conn, which)
        result.skipped_whole_messages = claimed.whole_messages
        entries = claimed.entries
        rows: list[Reading] = []
        extras: list[ExtraReading] = []
        passed: list[int] = []
        # Each passing entry with what it would store, to find the entry of a conflict.
        carried: list[tuple[int, list[Reading], list[ExtraReading]]] = []
        packs: dict[int, Salvaged | SenMLError] = {}
        for entry in entries:
            outcome = _revalidate(
                entry,
                claimed.payloads[entry.message_id],
                registries=registries,
                policy=policy,
                now=now,
                packs=packs,
            )
            if isinstance(outcome, StillBad):
                result.still_bad.append(outcome)
                continue
            rows.extend(outcome[0])
            extras.extend(outcome[1])
            passed.append(entry.id)
            carried.append((entry.id, *outcome))
        written = writer.write(rows, extras)
        # A reading whose key holds another value stays quarantined, as a conflict.
        if written.conflicts:
            for entry_id, refused in conflict_owners(written.conflicts, carried).items():
                c = refused[0]
                passed.remove(entry_id)
                result.still_bad.append(
                    StillBad(
                        entry_id,
                        Reason.CONFLICT,
                        f"{c.sensor_id}/{c.quantity} is stored with {c.stored!r} at that time",
                    )
                )
        table.mark_replayed(conn, passed)
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
    payload: bytes,
    *,
    registries: Mapping[bool, Mapping[str, Sensor]],
    policy: Policy,
    now: float,
    packs: dict[int, Salvaged | SenMLError],
) -> tuple[list[Reading], list[ExtraReading]] | StillBad:
    """``registries``: the registry (False) and its import view (True)."""
    assert entry.record_index is not None
    imported = entry.gateway_id is None and entry.topic.startswith(IMPORT_TOPIC)
    gateway = IMPORT_GATEWAY if imported else entry.gateway_id
    if gateway is None:  # the worker never writes this; an edited row might
        return StillBad(entry.id, Reason.BAD_TOPIC, "no gateway: the topic was not understood")
    received_at = entry.received_at.timestamp()
    # The bad records of one message share its payload: decode it once per replay.
    key = entry.message_id
    pack = packs.get(key)
    if pack is None:
        try:
            pack = decode_salvaging(payload, received_at)
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
    checked = validate(gateway, [record], registries[imported], received_at, policy)
    if checked.rejects:
        reject = checked.rejects[0]
        return StillBad(entry.id, reject.reason, reject.detail)
    # Aged past its series' raw retention since (the policy validation uses, from now): its
    # rows would be deleted, or land in a partition already dropped. Only age is asked here.
    aged = validate(
        gateway, [record], registries[imported], now, replace(policy, max_future_s=math.inf)
    )
    if aged.rejects:
        reject = aged.rejects[0]
        return StillBad(entry.id, reject.reason, f"past the retention now: {reject.detail}")
    return checked.rows, checked.extras
