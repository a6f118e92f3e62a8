"""The fast decoding path: msgspec's typed decoder, then one tight resolving loop.

It accepts a pack only when it can vouch that the careful path (``_careful.py``) would accept it
and return the same records; on anything unusual (a msgspec error, an unknown label, a name not
yet seen valid, an overflow, a second value field, ...) it raises :class:`Fallback` and
``decode`` asks the careful path, which finds the exact reason and record. msgspec's typing does
most of the checking in C: ``str`` fields refuse numbers and null, ``float`` fields take JSON
integers and refuse booleans, null and strings, and its parser refuses NaN, Infinity and
numbers that overflow a double, so every field read below is already a finite number of the
right type. The loop is written for speed (locals, no helper calls on the common path);
``bench/bench_senml.py`` measures it against a bare parse.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec
from msgspec import UNSET, UnsetType

from gateway.senml._record import (
    NAME_CACHE_SIZE,
    RELATIVE_TIME_LIMIT,
    SENML_VERSION,
    Record,
    decode_data_value,
    name_is_valid,
    valid_names,
)


class Fallback(Exception):  # noqa: N818 - a signal to the caller, not an error
    """Raised when the fast path cannot vouch for a pack; the careful path decides."""


class _RawRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # UNSET rather than None as the default: "n": null must fail typing, not look absent.
    # forbid_unknown_fields: an unknown label may end in '_' (an error, §4.4) or must be ignored;
    # either way the careful path handles it.
    bn: str | UnsetType = UNSET
    bt: float | UnsetType = UNSET
    bu: str | UnsetType = UNSET
    bv: float | UnsetType = UNSET
    bs: float | UnsetType = UNSET
    bver: int | UnsetType = UNSET
    n: str | UnsetType = UNSET
    u: str | UnsetType = UNSET
    v: float | UnsetType = UNSET
    vs: str | UnsetType = UNSET
    vb: bool | UnsetType = UNSET
    vd: str | UnsetType = UNSET
    s: float | UnsetType = UNSET
    t: float | UnsetType = UNSET
    ut: float | UnsetType = UNSET


_decode_raw = msgspec.json.Decoder(list[_RawRecord]).decode


def decode(payload: bytes | str, received_at: float) -> list[Record]:  # noqa: PLR0915
    """Decode and resolve a pack the careful path would accept, or raise :class:`Fallback`."""
    try:
        raws = _decode_raw(payload)
    except (msgspec.MsgspecError, ValueError):  # ValueError: msgspec's UnicodeDecodeError
        raise Fallback from None
    if not raws:
        return []
    pack_version = raws[0].bver
    if pack_version is UNSET:
        pack_version = SENML_VERSION
    elif not 1 <= pack_version <= SENML_VERSION:
        raise Fallback

    U: Final = UNSET  # noqa: N806 - a local is faster to read; Final lets mypy narrow on it
    isfinite = math.isfinite
    names = valid_names
    limit = RELATIVE_TIME_LIMIT
    records: list[Record] = []
    append = records.append
    bn = ""
    bt: float | None = None
    bu: str | None = None
    bv: float | None = None
    bs: float | None = None
    for r in raws:
        if (
            r.bn is not U
            or r.bt is not U
            or r.bu is not U
            or r.bv is not U
            or r.bs is not U
            or r.bver is not U
        ):
            if r.bver is not U and r.bver != pack_version:
                raise Fallback
            if r.bn is not U:
                bn = r.bn
            if r.bt is not U:
                bt = r.bt
            if r.bu is not U:
                bu = r.bu
            if r.bv is not U:
                bv = r.bv
            if r.bs is not U:
                bs = r.bs
            if (
                r.n is U
                and r.u is U
                and r.v is U
                and r.vs is U
                and r.vb is U
                and r.vd is U
                and r.s is U
                and r.t is U
                and r.ut is U
            ):
                continue  # base fields only: context for what follows (see _careful.py)

        n = r.n
        name = bn if n is U else bn + n
        if name not in names:
            if not name_is_valid(name):
                raise Fallback
            if len(names) >= NAME_CACHE_SIZE:
                names.clear()
            names.add(name)

        t = r.t
        if bt is None:
            time = 0.0 if t is U else t
        elif t is U:
            time = bt
        else:
            time = bt + t
            if not isfinite(time):
                raise Fallback
        if time < limit:
            time += received_at

        u = r.u
        unit = bu if u is U else u
        s = r.s
        total: float | None
        if s is U:
            total = bs
        elif bs is None:
            total = s
        else:
            total = bs + s
            if not isfinite(total):
                raise Fallback
        ut = r.ut
        update_time = None if ut is U else ut

        value = r.v
        if value is not U:
            if r.vs is not U or r.vb is not U or r.vd is not U:
                raise Fallback
            if bv is not None:
                value = bv + value
                if not isfinite(value):
                    raise Fallback
            append(Record(name, time, unit, value, None, None, None, total, update_time))
            continue
        vs = r.vs
        vb = r.vb
        vd = r.vd
        if vs is not U:
            if vb is not U or vd is not U:
                raise Fallback
            append(Record(name, time, unit, None, vs, None, None, total, update_time))
        elif vb is not U:
            if vd is not U:
                raise Fallback
            append(Record(name, time, unit, None, None, vb, None, total, update_time))
        elif vd is not U:
            data = decode_data_value(vd)
            if data is None:
                raise Fallback
            append(Record(name, time, unit, None, None, None, data, total, update_time))
        elif total is not None:
            append(Record(name, time, unit, None, None, None, None, total, update_time))
        else:
            raise Fallback
    return records
