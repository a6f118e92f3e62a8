"""Decode a pack, keeping its good records when one record breaks the wire contract.

The codec refuses a pack as a whole. Here a record the codec blames is cut out and the rest
decoded again, so one bad record costs only itself — unless it carries base fields (``bn``,
``bt``...), which shape the records after it: then no record of the pack can be trusted and the
whole pack is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from gateway.errors import SenMLError
from gateway.senml import Record, decode

_BASE_FIELDS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
# Each cut re-decodes the rest of the pack: past this many bad records the pack is refused
# whole (still kept, raw, in quarantine) rather than costing time quadratic in its size.
MAX_BAD_RECORDS = 100


@dataclass(frozen=True, slots=True)
class BadRecord:
    index: int  # in the original pack
    error: SenMLError


@dataclass(slots=True)
class Salvaged:
    records: list[Record]
    payload: bytes
    # Original index of each record when the pack was salvaged; None: ask ``original_index``.
    indexes: list[int] | None
    bad: list[BadRecord]

    def original_index(self, position: int) -> int:
        """The index in the pack of ``records[position]`` (base-only records yield none)."""
        if self.indexes is None:
            self.indexes = _value_records(msgspec.json.decode(self.payload))
        return self.indexes[position]


def _value_records(items: list[object]) -> list[int]:
    return [
        i
        for i, item in enumerate(items)
        if not (isinstance(item, dict) and set(item) <= _BASE_FIELDS)
    ]


def decode_salvaging(payload: bytes, received_at: float) -> Salvaged:
    """Raise ``SenMLError`` when the pack as a whole is lost; else return what could be kept."""
    try:
        return Salvaged(decode(payload, received_at), payload, None, [])
    except SenMLError as refused:
        if refused.index is None:
            raise
        first_error = refused
    try:
        items = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        raise first_error from None
    if not isinstance(items, list):
        raise first_error
    original = list(range(len(items)))
    bad: list[BadRecord] = []
    current = first_error
    while True:
        assert current.index is not None
        position = current.index
        item = items[position]
        if not isinstance(item, dict) or _BASE_FIELDS.intersection(item):
            raise SenMLError(
                current.reason,
                f"{current.message} (in a record carrying base fields, "
                "which the records after it depend on)",
                index=original[position],
                field=current.field,
            )
        if len(bad) >= MAX_BAD_RECORDS:
            raise SenMLError(
                current.reason,
                f"more than {MAX_BAD_RECORDS} bad records; the first: {bad[0].error.message}",
                index=None,
            )
        bad.append(
            BadRecord(
                original[position],
                SenMLError(
                    current.reason, current.message, index=original[position], field=current.field
                ),
            )
        )
        del items[position]
        del original[position]
        try:
            records = decode(msgspec.json.encode(items), received_at)
        except SenMLError as again:
            if again.index is None:
                raise
            current = again
            continue
        indexes = [original[i] for i in _value_records(items)]
        return Salvaged(records, payload, indexes, bad)
