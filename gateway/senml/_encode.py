"""Encoding resolved records as SenML JSON packs: compact (base fields) or resolved (§4.6)."""

from __future__ import annotations

import math
import os.path
from collections.abc import Iterable

import msgspec

from gateway.errors import SenMLError, SenMLReason
from gateway.senml._record import Record, encode_data_value, name_is_valid

_encode_json = msgspec.json.Encoder().encode


def encode(records: Iterable[Record]) -> bytes:
    """Encode records as a compact pack that ``decode`` reads back as the same records.

    Factors out a base name (the common prefix up to a '/' or ':', or the whole name when every
    record has the same one), a base unit (when every record has the same unit) and a base time
    (the first record's time, the others as offsets). The offsets are kept only when ``bt + t``
    gives back every time bit for bit; otherwise each record carries its absolute time, since
    ``bt + (time - bt)`` is not always ``time`` in floating point.

    Times below 2**28 are written as they are and so read back as relative to "now"
    (RFC 8428 §4.5.3). Raises :class:`SenMLError` (``index`` = position in ``records``) for a
    record that no pack could carry: a bad name, no or several values, a non-finite number.
    """
    items = _checked(records)
    if not items:
        return b"[]"
    names = [record.name for record in items]
    base_name = _base_name(names)
    units = {record.unit for record in items}
    base_unit = units.pop() if len(units) == 1 else None
    first_time = items[0].time
    exact = all(first_time + (record.time - first_time) == record.time for record in items)
    base_time = first_time if exact else None

    cut = len(base_name)
    pack: list[dict[str, object]] = []
    for record in items:
        fields: dict[str, object] = {}
        if not pack:
            if base_name:
                fields["bn"] = base_name
            if base_time is not None:
                fields["bt"] = base_time
            if base_unit is not None:
                fields["bu"] = base_unit
        if len(record.name) > cut:
            fields["n"] = record.name[cut:]
        if base_unit is None and record.unit is not None:
            fields["u"] = record.unit
        _put_values(fields, record)
        if base_time is None:
            fields["t"] = record.time
        elif record.time != base_time:
            fields["t"] = record.time - base_time
        if record.update_time is not None:
            fields["ut"] = record.update_time
        pack.append(fields)
    return _encode_json(pack)


def encode_resolved(records: Iterable[Record]) -> bytes:
    """Encode records as a pack of resolved records (RFC 8428 §4.6, as in §5.1.4)."""
    return _encode_json([to_resolved(record) for record in _checked(records)])


def to_resolved(record: Record) -> dict[str, object]:
    """Return the record as a resolved SenML JSON object: n, t, u, one value or none, s, ut.

    Absent fields are omitted; ``vd`` is base64url without padding.
    """
    fields: dict[str, object] = {"n": record.name, "t": record.time}
    if record.unit is not None:
        fields["u"] = record.unit
    _put_values(fields, record)
    if record.update_time is not None:
        fields["ut"] = record.update_time
    return fields


def _put_values(fields: dict[str, object], record: Record) -> None:
    if record.value is not None:
        fields["v"] = record.value
    elif record.string_value is not None:
        fields["vs"] = record.string_value
    elif record.bool_value is not None:
        fields["vb"] = record.bool_value
    elif record.data_value is not None:
        fields["vd"] = encode_data_value(record.data_value)
    if record.sum is not None:
        fields["s"] = record.sum


def _base_name(names: list[str]) -> str:
    first = names[0]
    if all(name == first for name in names):
        return first  # one sensor, many readings: "n" is left out of every record
    prefix = os.path.commonprefix(names)  # noqa: RUF071 - by character is what we want
    return prefix[: max(prefix.rfind("/"), prefix.rfind(":")) + 1]


def _checked(records: Iterable[Record]) -> list[Record]:
    items = list(records)
    for index, record in enumerate(items):
        if not name_is_valid(record.name):
            raise SenMLError(
                SenMLReason.BAD_NAME,
                f"name {record.name!r} breaks RFC 8428 §4.5.1",
                index=index,
                field="n",
            )
        values = [
            label
            for label, value in (
                ("v", record.value),
                ("vs", record.string_value),
                ("vb", record.bool_value),
                ("vd", record.data_value),
            )
            if value is not None
        ]
        if len(values) > 1:
            raise SenMLError(
                SenMLReason.MULTIPLE_VALUES,
                f"several values: {', '.join(values)}",
                index=index,
                field=values[1],
            )
        if not values and record.sum is None:
            raise SenMLError(SenMLReason.NO_VALUE, "no value and no sum", index=index)
        for label, number in (
            ("t", record.time),
            ("v", record.value),
            ("s", record.sum),
            ("ut", record.update_time),
        ):
            if number is not None and not math.isfinite(number):
                raise SenMLError(
                    SenMLReason.NOT_FINITE,
                    f"{number!r} cannot be written in JSON",
                    index=index,
                    field=label,
                )
    return items
