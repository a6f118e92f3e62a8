"""The careful decoding path: generic JSON, then every RFC 8428 rule, one record at a time.

This path defines what ``decode`` accepts and which error it raises; the fast path in
``_fast.py`` only gives the same answer sooner for packs it can vouch for. It parses with the
standard library's ``json`` rather than msgspec because msgspec refuses ``NaN``, ``Infinity``
and ``1e999`` as malformed or out of range, where we want to say ``not_finite`` and point at
the record and field. Checks run in a fixed order and the first failure is raised:

1. pack: UTF-8, JSON, an array (``not_json``, ``not_array``);
2. per record, in array order: an object; labels ending in '_' (§4.4); the JSON type and
   finiteness of each known label in Table 2 order; the version (§4.4); the value fields
   (§4.2); ``vd`` (§5); the resolved name (§4.5.1); the resolved time, value and sum (§4.5.3,
   §4.5.4), which can overflow even when every field is finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from gateway.errors import SenMLError, SenMLReason
from gateway.senml._record import (
    BASE_LABELS,
    RELATIVE_TIME_LIMIT,
    SENML_VERSION,
    Record,
    check_name,
    decode_data_value,
)

_STRING_LABELS = frozenset({"bn", "bu", "n", "u", "vs", "vd"})
_NUMBER_LABELS = frozenset({"bt", "bv", "bs", "bver", "v", "s", "t", "ut"})
# Table 2 order, so that a record with several bad fields always reports the same one.
_TYPED_LABELS = (
    "bn",
    "bt",
    "bu",
    "bv",
    "bs",
    "bver",
    "n",
    "u",
    "v",
    "vs",
    "vb",
    "vd",
    "s",
    "t",
    "ut",
)
_KNOWN_LABELS = frozenset(_TYPED_LABELS)
_REGULAR_LABELS = _KNOWN_LABELS - frozenset(BASE_LABELS)


def _parse_int(text: str) -> float:
    # Every SenML number is a double (§5), so integers become floats at once; float() of the
    # digits rounds correctly at any length, where int() stops at 4300 digits. "-0" becomes 0.0,
    # as msgspec decodes it, so that both paths give identical records.
    return float(text) or 0.0


_loads: Callable[[str], object] = json.JSONDecoder(
    parse_int=_parse_int,
    parse_constant=float,  # NaN, Infinity, -Infinity: reported below
).decode


def decode(payload: bytes | str, received_at: float) -> list[Record]:
    """Decode and resolve a SenML JSON pack, raising :class:`SenMLError` on the first fault."""
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = payload.decode("utf-8")  # §5: UTF-8 only (json.loads(bytes) would guess)
        except UnicodeDecodeError as exc:
            raise SenMLError(SenMLReason.NOT_JSON, f"not UTF-8: {exc.reason}") from None
    try:
        pack = _loads(text)
    except (ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise SenMLError(SenMLReason.NOT_JSON, f"not JSON: {message}") from None
    if not isinstance(pack, list):
        raise SenMLError(SenMLReason.NOT_ARRAY, f"the pack is a JSON {_json_type(pack)}")
    return _resolve(pack, received_at)


def _resolve(pack: list[object], received_at: float) -> list[Record]:
    records: list[Record] = []
    base_name = ""
    base_time: float | None = None
    base_unit: str | None = None
    base_value: float | None = None
    base_sum: float | None = None
    pack_version: int | None = None
    for index, raw in enumerate(pack):
        if not isinstance(raw, dict):
            raise SenMLError(
                SenMLReason.RECORD_NOT_OBJECT,
                f"a record must be a JSON object, not a {_json_type(raw)}",
                index=index,
            )
        fields = _checked_fields(raw, index)

        # §4.4: one version per pack. bver is a base field, so it carries over; checking where it
        # appears (and the first record's default of 10) covers every record.
        if "bver" in fields or pack_version is None:
            version = _version(fields.get("bver", SENML_VERSION), index)
            if pack_version is None:
                pack_version = version
            elif version != pack_version:
                raise SenMLError(
                    SenMLReason.MIXED_VERSIONS,
                    f"bver {version} differs from the pack's version {pack_version}",
                    index=index,
                    field="bver",
                )

        base_name = fields.get("bn", base_name)  # type: ignore[assignment]
        base_time = fields.get("bt", base_time)  # type: ignore[assignment]
        base_unit = fields.get("bu", base_unit)  # type: ignore[assignment]
        base_value = fields.get("bv", base_value)  # type: ignore[assignment]
        base_sum = fields.get("bs", base_sum)  # type: ignore[assignment]

        if fields.keys().isdisjoint(_REGULAR_LABELS) and not fields.keys().isdisjoint(BASE_LABELS):
            # A record of base fields only sets context for the records after it and yields no
            # reading. §4.2 asks for a value in every record, but the RFC's own actuator example
            # (§5.1.7) opens with {"bn": ...} alone; we read it the way its authors meant it.
            continue
        records.append(
            _record(
                fields,
                index,
                received_at,
                base_name=base_name,
                base_time=base_time,
                base_unit=base_unit,
                base_value=base_value,
                base_sum=base_sum,
            )
        )
    return records


def _record(
    fields: dict[str, object],
    index: int,
    received_at: float,
    *,
    base_name: str,
    base_time: float | None,
    base_unit: str | None,
    base_value: float | None,
    base_sum: float | None,
) -> Record:
    present = [label for label in ("v", "vs", "vb", "vd") if label in fields]
    if len(present) > 1:
        raise SenMLError(
            SenMLReason.MULTIPLE_VALUES,
            f"exactly one value field may appear, found {', '.join(present)}",
            index=index,
            field=present[1],
        )
    # §4.5.4: a base sum alone makes a sum (the missing Sum counts as zero); a base value alone
    # does not make a value. bv is added to "v" only: string, boolean and data values, and
    # records with a sum and no value, ignore it. Reading "the missing field(s) is considered to
    # have a value of zero" as giving every record under a bv a numeric value would give a record
    # with "vs" two values, which §4.2 forbids.
    if not present and "s" not in fields and base_sum is None:
        raise SenMLError(SenMLReason.NO_VALUE, "no v, vs, vb or vd, and no s or bs", index=index)
    data_value: bytes | None = None
    if "vd" in fields:
        data_value = decode_data_value(fields["vd"])  # type: ignore[arg-type]
        if data_value is None:
            raise SenMLError(
                SenMLReason.BAD_DATA_VALUE,
                "vd must be base64url (RFC 4648 §5) without padding",
                index=index,
                field="vd",
            )

    name = base_name + fields.get("n", "")  # type: ignore[operator]
    if not check_name(name):
        raise SenMLError(
            SenMLReason.BAD_NAME,
            f"resolved name {name!r} must match [A-Za-z0-9][A-Za-z0-9-:./_]* (RFC 8428 §4.5.1)",
            index=index,
            field="n" if "n" in fields else "bn",
        )

    time: float = fields.get("t", 0.0)  # type: ignore[assignment]
    if base_time is not None:
        time = base_time if "t" not in fields else _finite_sum(base_time, time, index, "t")
    if time < RELATIVE_TIME_LIMIT:  # §4.5.3: relative to "now", the time we received the pack
        time = time + received_at

    value: float | None = fields.get("v")  # type: ignore[assignment]
    if value is not None and base_value is not None:
        value = _finite_sum(base_value, value, index, "v")
    total: float | None = fields.get("s")  # type: ignore[assignment]
    if base_sum is not None:
        total = base_sum if total is None else _finite_sum(base_sum, total, index, "s")

    unit: str | None = fields.get("u", base_unit)  # type: ignore[assignment]
    return Record(
        name,
        time,
        unit,
        value,
        fields.get("vs"),  # type: ignore[arg-type]
        fields.get("vb"),  # type: ignore[arg-type]
        data_value,
        total,
        fields.get("ut"),  # type: ignore[arg-type]
    )


def _checked_fields(raw: dict[str, object], index: int) -> dict[str, object]:
    """Return the record's known fields, type-checked; raise on a mandatory unknown label."""
    for label in raw:
        if label.endswith("_"):
            raise SenMLError(
                SenMLReason.UNKNOWN_MANDATORY_FIELD,
                f"label {label!r} ends in '_' and is not understood (RFC 8428 §4.4)",
                index=index,
                field=label,
            )
    fields: dict[str, object] = {}
    for label in _TYPED_LABELS:
        if label not in raw:
            continue
        value = raw[label]
        if label in _STRING_LABELS:
            if not isinstance(value, str):
                raise _wrong_type(label, "a string", value, index)
            if not _is_text(value):
                # msgspec refuses unpaired surrogate escapes ("\ud800"), json accepts them; a
                # string that cannot be encoded as UTF-8 would fail in every later stage.
                raise SenMLError(
                    SenMLReason.NOT_JSON,
                    "string holds an unpaired surrogate escape",
                    index=index,
                    field=label,
                )
        elif label in _NUMBER_LABELS:
            # json gives bool for true/false and float for every number (see _parse_int).
            if not isinstance(value, float):
                raise _wrong_type(label, "a number", value, index)
            if not math.isfinite(value):
                raise SenMLError(
                    SenMLReason.NOT_FINITE,
                    f"{value!r} is not a finite double",
                    index=index,
                    field=label,
                )
        elif not isinstance(value, bool):  # vb
            raise _wrong_type(label, "a boolean", value, index)
        fields[label] = value
    return fields


def _version(value: object, index: int) -> int:
    # §4.1: "an optional positive integer". JSON has one number type, so 10.0 is 10.
    if not isinstance(value, float | int) or value < 1 or value != int(value):
        raise SenMLError(
            SenMLReason.WRONG_TYPE,
            f"bver must be a positive integer, got {value!r}",
            index=index,
            field="bver",
        )
    if value > SENML_VERSION:
        raise SenMLError(
            SenMLReason.UNSUPPORTED_VERSION,
            f"bver {value:g} is newer than the version we implement ({SENML_VERSION})",
            index=index,
            field="bver",
        )
    return int(value)


def _finite_sum(base: float, field: float, index: int, label: str) -> float:
    total = base + field
    if not math.isfinite(total):
        raise SenMLError(
            SenMLReason.NOT_FINITE,
            f"b{label} {base!r} + {label} {field!r} overflows a double",
            index=index,
            field=label,
        )
    return total


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _wrong_type(label: str, expected: str, value: object, index: int) -> SenMLError:
    return SenMLError(
        SenMLReason.WRONG_TYPE,
        f"{label} must be {expected}, not a JSON {_json_type(value)}",
        index=index,
        field=label,
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float | int):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
