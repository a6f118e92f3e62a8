"""Decode and validate: the ingestion worker's pure core, testable with no broker and no database.

Bytes, a registry snapshot and a clock (each message's time of reception) in; rows to store and
quarantine entries out. Nothing here reads a socket or a table: ``worker.py`` feeds it the MQTT
messages of a batch and writes what it returns, and a tool importing packs from elsewhere calls
:func:`validate_pack` on each.

A message goes through in two steps, so that the worker can look up its unknown sensors in
between (``sensor_directory.SensorDirectory.ensure``, a query only on a miss):

1. :func:`open_message` parses the topic (once), reads the pack's identity, and decodes the
   pack, salvaging its good records (``salvage.py``) and cutting it at ``MAX_PACK_RECORDS``;
2. :func:`add_message` validates the pack against the snapshot (``validate.py``) and appends to
   the batch's :class:`Prepared` its rows, extras, quarantine item, gateway status and pending
   sensors, with where its share ends so that a message can be written alone.
   :func:`prepare` does it for a sequence of opened messages.

:func:`with_conflicts` adds, after a write, a ``conflict`` entry for each reading the key
refused to the quarantine item of the message that carried it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from gateway import topics
from gateway.errors import SenMLError, TopicError
from gateway.limits import MAX_PACK_BYTES, MAX_PACK_RECORDS
from gateway.receipts import PackId, ReceiptError, pack_id
from gateway.senml import Record
from services.storage.writer import Conflict, ExtraReading, Reading, conflict_owners, time_us

from .quarantine import Quarantined, Rejected, bounded
from .salvage import Salvaged, decode_salvaging
from .validate import Policy, Reason, Sensor, Validator

# What one message may cost the quarantine by default (URBANPULSE_QUARANTINE_MAX_ENTRIES_PER_
# MESSAGE; the worker passes its setting).
MAX_ENTRIES_PER_MESSAGE = 500


class Incoming(Protocol):
    """A message as received: what decoding needs of it (the worker's MQTT message has more)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def received_at(self) -> float: ...
    @property
    def retained(self) -> bool: ...
    @property
    def properties(self) -> list[tuple[str, str]] | None: ...  # MQTT 5 user properties


# Named tuples rather than frozen dataclasses: several are made per message, and a frozen
# dataclass costs a setattr call per field to build.
class GatewayStatus(NamedTuple):
    gateway_id: str
    online: bool
    seen_now: bool  # False for the broker's retained copy: its memory, not a sign of life


class PendingSensor(NamedTuple):
    """An unknown sensor to add as ``pending`` (``register_unknown``)."""

    sensor_id: str
    gateway_id: str


class NumberedPack(NamedTuple):
    """A pack carrying its gateway outbox's identity (``gateway.receipts``)."""

    gateway_id: str
    identity: PackId


class Ends(NamedTuple):
    """How many rows, extras and quarantine items the batch holds after a message."""

    rows: int = 0
    extras: int = 0
    quarantine: int = 0


@dataclass(slots=True)
class OpenedPack:
    """A pack decoded, not yet validated: its records (at most ``MAX_PACK_RECORDS``) and the
    entries decoding already made."""

    gateway_id: str
    received_at: float
    records: list[Record] = field(default_factory=list)
    entries: list[Rejected] = field(default_factory=list)
    # None when the pack as a whole was refused (``entries`` says why): nothing to validate.
    salvaged: Salvaged | None = None
    excess: Rejected | None = None  # records past MAX_PACK_RECORDS, outside the entries' bound


class PackResult(NamedTuple):
    """A pack validated: rows and extras to store, entries to quarantine (bounded), and the
    ids of the sensors it named that are not registered."""

    rows: list[Reading]
    extras: list[ExtraReading]
    entries: list[Rejected]
    unknown: list[str]


@dataclass(slots=True)
class Opened:
    """One message after :func:`open_message`."""

    item: Quarantined  # the message as the quarantine keeps it; entries not yet bounded
    channel: topics.Channel | None = None  # None: the topic is not of the scheme
    gateway_id: str | None = None
    pack: OpenedPack | None = None  # an ``up`` message to validate
    status: GatewayStatus | None = None
    numbered: NumberedPack | None = None
    identity_error: ReceiptError | None = None  # a malformed identity: taken unnumbered
    retained_ignored: bool = False  # a retained pack on ``up``: never news


@dataclass(slots=True)
class Prepared:
    """A batch decoded and validated, ready to be written in one transaction."""

    rows: list[Reading] = field(default_factory=list)
    extras: list[ExtraReading] = field(default_factory=list)
    # One item per message with something quarantined, and that message's index in the batch.
    quarantine: list[Quarantined] = field(default_factory=list)
    quarantined_message: list[int] = field(default_factory=list)
    status: list[GatewayStatus] = field(default_factory=list)
    pending: set[PendingSensor] = field(default_factory=set)
    # Per message: its place in the lists above, its gateway (None: a bad topic), its identity.
    ends: list[Ends] = field(default_factory=list)
    gateway_ids: list[str | None] = field(default_factory=list)
    numbered: list[NumberedPack | None] = field(default_factory=list)

    def start(self, number: int) -> Ends:
        """Where message ``number``'s share begins."""
        return self.ends[number - 1] if number > 0 else Ends()

    def carried(self, number: int) -> tuple[list[Reading], list[ExtraReading]]:
        """The rows and extras of message ``number``."""
        first, end = self.start(number), self.ends[number]
        return self.rows[first.rows : end.rows], self.extras[first.extras : end.extras]

    def part(
        self, messages: Sequence[int]
    ) -> tuple[list[Reading], list[ExtraReading], list[Quarantined]]:
        """The rows, extras and quarantine items of ``messages`` (ascending numbers)."""
        if isinstance(messages, range) and messages.step == 1:
            if not messages:
                return [], [], []
            first, end = self.start(messages.start), self.ends[messages.stop - 1]
            return (
                self.rows[first.rows : end.rows],
                self.extras[first.extras : end.extras],
                self.quarantine[first.quarantine : end.quarantine],
            )
        rows: list[Reading] = []
        extras: list[ExtraReading] = []
        for number in messages:
            carried_rows, carried_extras = self.carried(number)
            rows.extend(carried_rows)
            extras.extend(carried_extras)
        wanted = set(messages)
        items = [
            item
            for number, item in zip(self.quarantined_message, self.quarantine, strict=True)
            if number in wanted
        ]
        return rows, extras, items


def open_pack(payload: bytes, gateway_id: str, received_at: float) -> OpenedPack:
    """Decode a pack, salvaging its good records; the records past ``MAX_PACK_RECORDS`` are
    not looked at (one ``excess`` entry says so)."""
    pack = OpenedPack(gateway_id, received_at)
    try:
        salvaged = decode_salvaging(payload, received_at)
    except SenMLError as exc:
        pack.entries.append(Rejected(gateway_id, None, exc.index, Reason.NOT_SENML, str(exc)))
        return pack
    pack.salvaged = salvaged
    for bad in salvaged.bad:
        pack.entries.append(Rejected(gateway_id, None, bad.index, Reason.NOT_SENML, str(bad.error)))
    records = salvaged.records
    if len(records) > MAX_PACK_RECORDS:
        first = salvaged.original_index(MAX_PACK_RECORDS)
        pack.excess = Rejected(
            gateway_id,
            None,
            None,
            Reason.TOO_MANY_RECORDS,
            f"{len(records)} records; a pack may hold {MAX_PACK_RECORDS}: those from index "
            f"{first} on ({len(records) - MAX_PACK_RECORDS}) were not looked at",
        )
        records = records[:MAX_PACK_RECORDS]
    pack.records = records
    return pack


def check_pack(
    pack: OpenedPack,
    sensors: Mapping[str, Sensor],
    validator: Validator,
    *,
    max_entries: int = MAX_ENTRIES_PER_MESSAGE,
) -> PackResult:
    """Validate an opened pack against the registry snapshot ``sensors``.

    ``validator`` caches each name's resolution: clear it when the snapshot changes."""
    if pack.salvaged is None:
        return PackResult([], [], list(pack.entries), [])
    result = validator.validate(pack.gateway_id, pack.records, sensors, pack.received_at)
    entries = list(pack.entries)
    unknown: list[str] = []
    if result.rejects:  # the common pack has none: no work for it here
        original_index = pack.salvaged.original_index
        entries.extend(
            Rejected(pack.gateway_id, r.sensor_id, original_index(r.index), r.reason, r.detail)
            for r in result.rejects
        )
        unknown = [
            r.sensor_id
            for r in result.rejects
            if r.reason is Reason.UNKNOWN_SENSOR and r.sensor_id is not None
        ]
    entries = bounded(entries, max_entries)
    if pack.excess is not None:
        entries = [*entries, pack.excess]
    return PackResult(result.rows, result.extras, entries, unknown)


def validate_pack(
    payload: bytes,
    gateway_id: str,
    sensors: Mapping[str, Sensor],
    received_at: float,
    *,
    policy: Policy | None = None,
    max_entries: int = MAX_ENTRIES_PER_MESSAGE,
) -> PackResult:
    """Decode and validate one SenML pack exactly as the worker does for a message on
    ``ssc/v1/<gateway_id>/up``, with no broker and no database.

    ``sensors`` is the registry snapshot (sensor id -> :class:`~.validate.Sensor`);
    ``received_at`` (Unix seconds) resolves relative times and judges the time window of
    ``policy`` (default: ``Policy()``; the worker's comes from the settings, ``validate.policy``).
    Returns the rows and extras that may be stored and the quarantine entries for the rest,
    at most ``max_entries`` itemised plus one counting the others, and one for the records
    past ``MAX_PACK_RECORDS``. A pack larger than ``MAX_PACK_BYTES`` is refused whole, as the
    worker refuses it. Never raises for bad input: every refusal is an entry with its reason.
    """
    if len(payload) > MAX_PACK_BYTES:
        return PackResult([], [], [_too_large(gateway_id, len(payload))], [])
    pack = open_pack(payload, gateway_id, received_at)
    return check_pack(pack, sensors, Validator(policy), max_entries=max_entries)


def open_message(message: Incoming) -> Opened:
    """Parse the topic (once), read a pack's identity, decode the pack; no validation yet."""
    opened = Opened(Quarantined(message.received_at, message.topic, message.payload))
    entries = opened.item.entries
    try:
        parsed = topics.parse_topic(message.topic)
    except TopicError as exc:
        entries.append(Rejected(None, None, None, Reason.BAD_TOPIC, str(exc)))
        return opened
    opened.channel, opened.gateway_id = parsed.channel, parsed.gateway_id
    gateway_id = parsed.gateway_id
    if parsed.channel is topics.Channel.STATUS:
        text = message.payload.decode("utf-8", "replace").strip().lower()
        if text in ("online", "offline"):
            opened.status = GatewayStatus(gateway_id, text == "online", not message.retained)
        else:
            entries.append(
                Rejected(
                    gateway_id,
                    None,
                    None,
                    Reason.BAD_STATUS,
                    "status must be 'online' or 'offline'",
                )
            )
        return opened
    if message.retained:
        # The broker's copy of a pack someone published with the retain flag: it comes again
        # at every (re)subscription, so it is never news (its first, live delivery carried no
        # retain flag and was taken then).
        opened.retained_ignored = True
        return opened
    if parsed.channel is topics.Channel.UP and message.properties:
        try:
            identity = pack_id(message.properties)
        except ReceiptError as exc:
            # The pack itself may be fine: store it unnumbered (no ledger, no receipt; the
            # gateway resends and the readings key absorbs it) rather than refuse readings.
            opened.identity_error = exc
        else:
            if identity is not None:
                opened.numbered = NumberedPack(gateway_id, identity)
    size = len(message.payload)
    if size > MAX_PACK_BYTES:
        opened.item.payload, opened.item.size = message.payload[:MAX_PACK_BYTES], size
        entries.append(_too_large(gateway_id, size))
        return opened
    opened.pack = open_pack(message.payload, gateway_id, message.received_at)
    return opened


def add_message(
    prepared: Prepared,
    message: Opened,
    sensors: Mapping[str, Sensor],
    validator: Validator,
    *,
    max_entries: int = MAX_ENTRIES_PER_MESSAGE,
    register_unknown: bool = False,
) -> None:
    """Validate one opened message against the snapshot ``sensors`` and append its share to
    ``prepared`` (as the batch's next message); ``message`` is left as it was.

    The worker calls this message by message, topping the snapshot up with the message's
    unknown sensors just before: a batch's records then never all live at once."""
    number = len(prepared.ends)
    rows, extras = prepared.rows, prepared.extras
    prepared.numbered.append(message.numbered)
    prepared.gateway_ids.append(message.gateway_id)
    entries = message.item.entries  # not changed in place: ``message`` stays as it was
    if message.status is not None:
        prepared.status.append(message.status)
    if message.pack is not None:
        result = check_pack(message.pack, sensors, validator, max_entries=max_entries)
        rows.extend(result.rows)
        extras.extend(result.extras)
        if result.entries:
            entries = [*entries, *result.entries]
        if register_unknown:
            gateway_id = message.pack.gateway_id
            prepared.pending.update(PendingSensor(s, gateway_id) for s in result.unknown)
    if entries:
        template = message.item
        prepared.quarantine.append(
            Quarantined(
                template.received_at,
                template.topic,
                template.payload,
                list(entries),
                template.size,
            )
        )
        prepared.quarantined_message.append(number)
    prepared.ends.append(Ends(len(rows), len(extras), len(prepared.quarantine)))


def prepare(
    opened: Sequence[Opened],
    sensors: Mapping[str, Sensor],
    validator: Validator,
    *,
    max_entries: int = MAX_ENTRIES_PER_MESSAGE,
    register_unknown: bool = False,
) -> Prepared:
    """Validate the opened messages of a batch (:func:`add_message` each); ``opened`` is left
    as it was."""
    prepared = Prepared()
    for message in opened:
        add_message(
            prepared,
            message,
            sensors,
            validator,
            max_entries=max_entries,
            register_unknown=register_unknown,
        )
    return prepared


def with_conflicts(
    prepared: Prepared,
    messages: Sequence[Incoming],
    kept: Sequence[int],
    conflicts: Sequence[Conflict],
    *,
    max_entries: int = MAX_ENTRIES_PER_MESSAGE,
) -> dict[int, Quarantined]:
    """The new quarantine item of each message among ``kept`` (numbers into ``messages``, the
    batch) that carried a reading the key refused: its entries so far and a ``conflict`` entry
    per refused reading, under one bound. Items are new: ``prepared`` stays as it was, should
    the transaction be retried.

    Only on this rare path is a message decoded again, to name the record's index."""

    def carriers() -> Iterator[tuple[int, list[Reading], list[ExtraReading]]]:
        for number in kept:
            yield (number, *prepared.carried(number))

    found = conflict_owners(conflicts, carriers())
    by_message = dict(zip(prepared.quarantined_message, prepared.quarantine, strict=True))
    replaced: dict[int, Quarantined] = {}
    for number, refused in found.items():
        message = messages[number]
        old = by_message.get(number)
        item = Quarantined(message.received_at, message.topic, message.payload)
        earlier = old.entries if old else []
        # One bound over the message's entries old and new (``bounded`` folds an earlier
        # summary into its own); the records past MAX_PACK_RECORDS stay outside it, as when
        # the message was first taken apart.
        excess = [e for e in earlier if e.reason == Reason.TOO_MANY_RECORDS]
        joined = [e for e in earlier if e.reason != Reason.TOO_MANY_RECORDS]
        joined.extend(conflict_entries(message, prepared.gateway_ids[number], refused))
        item.entries = [*bounded(joined, max_entries), *excess]
        replaced[number] = item
    return replaced


def conflict_entries(
    message: Incoming, gateway_id: str | None, conflicts: Sequence[Conflict]
) -> list[Rejected]:
    """One ``conflict`` entry per refused reading of ``message``, naming its record."""
    indexes: dict[tuple[str, int], int] = {}
    with contextlib.suppress(SenMLError):
        salvaged = decode_salvaging(message.payload, message.received_at)
        for position, record in enumerate(salvaged.records):
            indexes.setdefault(
                (record.name, time_us(record.time)), salvaged.original_index(position)
            )
    return [
        Rejected(
            gateway_id,
            c.sensor_id,
            indexes.get((f"{c.sensor_id}/{c.quantity}", c.time_us)),
            Reason.CONFLICT,
            f"{c.sensor_id}/{c.quantity} at {_iso(c.time_us)} is stored with "
            f"{_shown(c.stored)}; this message says {_shown(c.received)}. The stored value "
            "stays: an operator decides",
        )
        for c in conflicts
    ]


def refused_by_storage(message: Incoming, gateway_id: str | None, error: Exception) -> Quarantined:
    """The whole message, quarantined because PostgreSQL refused it again on its own."""
    refused = Quarantined(message.received_at, message.topic, message.payload)
    refused.entries.append(
        Rejected(gateway_id, None, None, Reason.STORAGE_ERROR, f"{type(error).__name__}: {error}")
    )
    return refused


def _too_large(gateway_id: str, size: int) -> Rejected:
    return Rejected(
        gateway_id,
        None,
        None,
        Reason.PACK_TOO_LARGE,
        f"{size} bytes; a pack may hold {MAX_PACK_BYTES} (the first kept here)",
    )


def _iso(microseconds: int) -> str:
    return datetime.fromtimestamp(microseconds / 1e6, UTC).isoformat(timespec="microseconds")


def _shown(value: object) -> str:
    """A stored or received value for a conflict's detail: a number, or an extra's one field."""
    if isinstance(value, tuple):
        return next((repr(v) for v in value if v is not None), "nothing")
    return repr(value)
