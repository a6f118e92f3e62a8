"""The SenML codec: refused packs (exact reason, record and field), resolution, encoding."""

from __future__ import annotations

import json
import math
import pickle

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import SenMLError, SenMLReason, WireError
from gateway.senml import (
    Record,
    _careful,
    _fast,
    _record,
    decode,
    encode,
    encode_resolved,
    to_resolved,
)

R = SenMLReason
NOW = 1_700_000_000.0
ABS = 1_600_000_000.0  # an absolute base time, well above 2**28


def _pack(*records: object) -> bytes:
    return json.dumps(list(records)).encode()


OK = {"n": "a", "v": 1}  # a valid record to pad packs with, so indexes are not always 0

# (payload, reason, record index, field)
REFUSED = [
    # the pack as a whole
    pytest.param(b"", R.NOT_JSON, None, None, id="empty-payload"),
    pytest.param(b"[", R.NOT_JSON, None, None, id="truncated"),
    pytest.param(b'[{"n":"a","v":1},]', R.NOT_JSON, None, None, id="trailing-comma"),
    pytest.param(b'[{"n":"a","v":1}] []', R.NOT_JSON, None, None, id="trailing-garbage"),
    pytest.param(b"\xff[]", R.NOT_JSON, None, None, id="not-utf8"),
    pytest.param(b'[{"n":"a","vs":"\xc3"}]', R.NOT_JSON, None, None, id="broken-utf8-in-string"),
    pytest.param(b"\xef\xbb\xbf[]", R.NOT_JSON, None, None, id="utf8-bom"),
    pytest.param("[]".encode("utf-16"), R.NOT_JSON, None, None, id="utf16"),
    pytest.param(b"[" * 100_000, R.NOT_JSON, None, None, id="nested-too-deep"),
    pytest.param(b"{}", R.NOT_ARRAY, None, None, id="object"),
    pytest.param(b'{"n":"a","v":1}', R.NOT_ARRAY, None, None, id="bare-record"),
    pytest.param(b"1", R.NOT_ARRAY, None, None, id="number"),
    pytest.param(b'"[]"', R.NOT_ARRAY, None, None, id="string"),
    pytest.param(b"null", R.NOT_ARRAY, None, None, id="null"),
    # records
    pytest.param(b"[1]", R.RECORD_NOT_OBJECT, 0, None, id="number-record"),
    pytest.param(_pack(OK, []), R.RECORD_NOT_OBJECT, 1, None, id="array-record"),
    pytest.param(_pack(OK, OK, None), R.RECORD_NOT_OBJECT, 2, None, id="null-record"),
    pytest.param(b'[[{"n":"a","v":1}]]', R.RECORD_NOT_OBJECT, 0, None, id="nested-pack"),
    # types (RFC 8428 Table 2)
    pytest.param(_pack({"n": "a", "v": "1"}), R.WRONG_TYPE, 0, "v", id="v-string"),
    pytest.param(_pack(OK, {"n": 5, "v": 1}), R.WRONG_TYPE, 1, "n", id="n-number"),
    pytest.param(_pack({"n": "a", "vb": 1}), R.WRONG_TYPE, 0, "vb", id="vb-number"),
    pytest.param(_pack({"n": "a", "vb": "true"}), R.WRONG_TYPE, 0, "vb", id="vb-string"),
    pytest.param(_pack({"n": "a", "v": True}), R.WRONG_TYPE, 0, "v", id="v-bool"),
    pytest.param(_pack({"n": "a", "v": None}), R.WRONG_TYPE, 0, "v", id="v-null"),
    pytest.param(_pack({"n": "a", "vs": 1}), R.WRONG_TYPE, 0, "vs", id="vs-number"),
    pytest.param(_pack({"n": "a", "vd": 5}), R.WRONG_TYPE, 0, "vd", id="vd-number"),
    pytest.param(_pack({"n": "a", "v": 1, "u": 1}), R.WRONG_TYPE, 0, "u", id="u-number"),
    pytest.param(_pack({"n": "a", "s": "1"}), R.WRONG_TYPE, 0, "s", id="s-string"),
    pytest.param(_pack({"n": "a", "v": 1, "t": True}), R.WRONG_TYPE, 0, "t", id="t-bool"),
    pytest.param(_pack({"n": "a", "v": 1, "ut": []}), R.WRONG_TYPE, 0, "ut", id="ut-array"),
    pytest.param(_pack({"bn": None, "n": "a", "v": 1}), R.WRONG_TYPE, 0, "bn", id="bn-null"),
    pytest.param(_pack(OK, {"bt": "0", **OK}), R.WRONG_TYPE, 1, "bt", id="bt-string"),
    pytest.param(_pack({"bu": 1, **OK}), R.WRONG_TYPE, 0, "bu", id="bu-number"),
    pytest.param(_pack({"bv": {}, **OK}), R.WRONG_TYPE, 0, "bv", id="bv-object"),
    pytest.param(_pack({"bs": False, **OK}), R.WRONG_TYPE, 0, "bs", id="bs-bool"),
    pytest.param(_pack({"bver": "10", **OK}), R.WRONG_TYPE, 0, "bver", id="bver-string"),
    pytest.param(_pack({"bver": True, **OK}), R.WRONG_TYPE, 0, "bver", id="bver-bool"),
    pytest.param(_pack({"bver": 0, **OK}), R.WRONG_TYPE, 0, "bver", id="bver-zero"),
    pytest.param(_pack({"bver": -1, **OK}), R.WRONG_TYPE, 0, "bver", id="bver-negative"),
    pytest.param(_pack({"bver": 5.5, **OK}), R.WRONG_TYPE, 0, "bver", id="bver-fraction"),
    pytest.param(_pack({"n": 5, "v": "x"}), R.WRONG_TYPE, 0, "n", id="first-in-table-order"),
    # finiteness
    pytest.param(b'[{"n":"a","v":NaN}]', R.NOT_FINITE, 0, "v", id="nan"),
    pytest.param(b'[{"n":"a","v":Infinity}]', R.NOT_FINITE, 0, "v", id="infinity"),
    pytest.param(b'[{"n":"a","v":1,"t":-Infinity}]', R.NOT_FINITE, 0, "t", id="minus-infinity"),
    pytest.param(b'[{"n":"a","v":1e999}]', R.NOT_FINITE, 0, "v", id="overflow-exponent"),
    pytest.param(b'[{"n":"a","s":-1e999}]', R.NOT_FINITE, 0, "s", id="overflow-negative"),
    pytest.param(
        b'[{"n":"a","v":1' + b"0" * 400 + b"}]", R.NOT_FINITE, 0, "v", id="overflow-integer"
    ),
    pytest.param(
        b'[{"n":"a","v":1' + b"0" * 5000 + b"}]",
        R.NOT_FINITE,
        0,
        "v",
        id="overflow-integer-past-int-digit-limit",
    ),
    pytest.param(b'[{"n":"a","v":1,"ut":1e999}]', R.NOT_FINITE, 0, "ut", id="overflow-ut"),
    pytest.param(b'[{"bver":1e999,"n":"a","v":1}]', R.NOT_FINITE, 0, "bver", id="overflow-bver"),
    pytest.param(
        _pack({"bt": 1e308, "n": "a", "v": 1, "t": 1e308}),
        R.NOT_FINITE,
        0,
        "t",
        id="bt-plus-t-overflows",
    ),
    pytest.param(
        _pack({"bv": -1e308, **OK}, {"n": "a", "v": -1e308}),
        R.NOT_FINITE,
        1,
        "v",
        id="bv-plus-v-overflows",
    ),
    pytest.param(
        _pack({"bs": 1e308, "n": "a", "s": 1e308}), R.NOT_FINITE, 0, "s", id="bs-plus-s-overflows"
    ),
    # extensibility (§4.4)
    pytest.param(
        _pack({"n": "a", "v": 1, "x_": 1}), R.UNKNOWN_MANDATORY_FIELD, 0, "x_", id="mandatory-label"
    ),
    pytest.param(
        _pack(OK, OK, {"n": "a", "v": 1, "_": 0}),
        R.UNKNOWN_MANDATORY_FIELD,
        2,
        "_",
        id="underscore-only-label",
    ),
    pytest.param(
        _pack({"bn_": "a", "n": "a", "v": "wrong"}),
        R.UNKNOWN_MANDATORY_FIELD,
        0,
        "bn_",
        id="mandatory-label-before-types",
    ),
    # values (§4.2, §4.5.4)
    pytest.param(_pack({"n": "a"}), R.NO_VALUE, 0, None, id="name-only"),
    pytest.param(
        _pack({"n": "a", "t": 1, "u": "W", "ut": 60}), R.NO_VALUE, 0, None, id="no-value-fields"
    ),
    pytest.param(_pack({"bn": "a", "n": "b", "v": 1}, {}), R.NO_VALUE, 1, None, id="empty-object"),
    pytest.param(_pack({"bv": 10, "n": "a"}), R.NO_VALUE, 0, None, id="base-value-alone"),
    pytest.param(_pack({"n": "a", "foo": 1}), R.NO_VALUE, 0, None, id="unknown-field-only"),
    pytest.param(_pack({"n": "a", "v": 1, "vs": "x"}), R.MULTIPLE_VALUES, 0, "vs", id="v-vs"),
    pytest.param(
        _pack(OK, {"n": "a", "vs": "x", "vb": True}), R.MULTIPLE_VALUES, 1, "vb", id="vs-vb"
    ),
    pytest.param(_pack({"n": "a", "v": 1, "vd": ""}), R.MULTIPLE_VALUES, 0, "vd", id="v-vd"),
    pytest.param(
        _pack({"n": "a", "v": 1, "vs": "", "vb": False, "vd": "", "s": 1}),
        R.MULTIPLE_VALUES,
        0,
        "vs",
        id="all-four",
    ),
    # data values (§5)
    pytest.param(_pack({"n": "a", "vd": "aGkgCg=="}), R.BAD_DATA_VALUE, 0, "vd", id="padded"),
    pytest.param(_pack({"n": "a", "vd": "aGkgC"}), R.BAD_DATA_VALUE, 0, "vd", id="length-1-mod-4"),
    pytest.param(_pack({"n": "a", "vd": "a+b/"}), R.BAD_DATA_VALUE, 0, "vd", id="std-alphabet"),
    pytest.param(_pack({"n": "a", "vd": "aG kg"}), R.BAD_DATA_VALUE, 0, "vd", id="space"),
    # names (§4.5.1)
    pytest.param(_pack({"v": 1}), R.BAD_NAME, 0, "bn", id="no-name"),
    pytest.param(_pack({"n": "", "v": 1}), R.BAD_NAME, 0, "n", id="empty-name"),
    pytest.param(_pack(OK, OK, OK, {"n": "-a", "v": 1}), R.BAD_NAME, 3, "n", id="starts-dash"),
    pytest.param(_pack({"n": "_a", "v": 1}), R.BAD_NAME, 0, "n", id="starts-underscore"),
    pytest.param(_pack({"n": "a b", "v": 1}), R.BAD_NAME, 0, "n", id="space"),
    pytest.param(_pack({"n": "a#", "v": 1}), R.BAD_NAME, 0, "n", id="hash"),
    pytest.param(_pack({"n": "a\n", "v": 1}), R.BAD_NAME, 0, "n", id="trailing-newline"),
    pytest.param(_pack({"n": "caf\u00e9", "v": 1}), R.BAD_NAME, 0, "n", id="non-ascii-letter"),
    pytest.param(_pack({"n": "\u0661", "v": 1}), R.BAD_NAME, 0, "n", id="non-ascii-digit"),
    pytest.param(_pack({"bn": "/x/", "n": "y", "v": 1}), R.BAD_NAME, 0, "n", id="bad-base-name"),
    pytest.param(
        _pack({"bn": "dev/"}, OK, {"bn": "+", "v": 1}),
        R.BAD_NAME,
        2,
        "bn",
        id="bad-base-name-alone",
    ),
    # versions (§4.4)
    pytest.param(_pack({"bver": 11, **OK}), R.UNSUPPORTED_VERSION, 0, "bver", id="bver-11"),
    pytest.param(_pack({"bver": 1e300, **OK}), R.UNSUPPORTED_VERSION, 0, "bver", id="bver-huge"),
    pytest.param(
        _pack({"bver": 10, **OK}, {"bver": 11, **OK}),
        R.UNSUPPORTED_VERSION,
        1,
        "bver",
        id="bver-11-later",
    ),
    pytest.param(
        _pack({"bver": 5, **OK}, {"bver": 10, **OK}), R.MIXED_VERSIONS, 1, "bver", id="mixed"
    ),
    pytest.param(
        _pack(OK, OK, {"bver": 5, **OK}), R.MIXED_VERSIONS, 2, "bver", id="mixed-with-default"
    ),
    pytest.param(
        _pack({"bver": 9}, {"bver": 10, **OK}),
        R.MIXED_VERSIONS,
        1,
        "bver",
        id="mixed-after-context-record",
    ),
    # strings json accepts and msgspec does not (unpaired surrogate escapes)
    pytest.param(b'[{"n":"a","vs":"\\ud800"}]', R.NOT_JSON, 0, "vs", id="lone-surrogate"),
]


@pytest.mark.parametrize(("payload", "reason", "index", "field"), REFUSED)
def test_refused(payload: bytes, reason: SenMLReason, index: int | None, field: str | None) -> None:
    with pytest.raises(SenMLError) as caught:
        decode(payload, NOW)
    err = caught.value
    assert (err.reason, err.index, err.field) == (reason, index, field)
    assert err.reason == reason.value  # a plain str code too
    assert str(err).startswith(reason.value)
    # The fast path must never vouch for a pack the careful path refuses.
    with pytest.raises(_fast.Fallback):
        _fast.decode(payload, NOW)


def _rec(name: str, time: float, unit: str | None = None, **kw: object) -> Record:
    return Record(name, time, unit, **kw)  # type: ignore[arg-type]


# (pack, expected records), received at NOW
RESOLVED = [
    pytest.param(b"[]", [], id="empty-pack"),
    pytest.param(b" \t\n[ ]\r\n", [], id="empty-pack-whitespace"),
    pytest.param(_pack({"bn": "dev/", "bt": ABS, "bu": "W"}), [], id="context-record-only"),
    pytest.param(
        _pack(
            {"bn": "dev/", "bt": ABS, "bu": "W", "n": "p", "v": 1},
            {"n": "p", "t": 60, "v": 2},
            {"n": "q", "u": "V", "v": 3},
            {"bn": "other/", "n": "p", "v": 4},
            {"bt": ABS + 1000, "bu": "kW", "n": "p", "t": 1, "v": 5},
        ),
        [
            _rec("dev/p", ABS, "W", value=1.0),
            _rec("dev/p", ABS + 60, "W", value=2.0),
            _rec("dev/q", ABS, "V", value=3.0),
            _rec("other/p", ABS, "W", value=4.0),
            _rec("other/p", ABS + 1001, "kW", value=5.0),
        ],
        id="base-fields-carry-over-until-overridden",
    ),
    pytest.param(
        _pack({"bn": "urn:dev:x", "v": 1}, {"t": -10, "v": 2}),
        [_rec("urn:dev:x", NOW, value=1.0), _rec("urn:dev:x", NOW - 10, value=2.0)],
        id="name-from-base-name-alone",
    ),
    pytest.param(
        _pack(
            {"n": "a", "v": 1},
            {"n": "a", "t": 0, "v": 2},
            {"n": "a", "t": -60.5, "v": 3},
            {"n": "a", "t": 30, "v": 4},
        ),
        [
            _rec("a", NOW, value=1.0),
            _rec("a", NOW, value=2.0),
            _rec("a", NOW - 60.5, value=3.0),
            _rec("a", NOW + 30, value=4.0),
        ],
        id="relative-times",
    ),
    pytest.param(
        _pack({"bt": -100, "n": "a", "t": 10, "v": 1}),
        [_rec("a", NOW - 90, value=1.0)],
        id="relative-base-time",
    ),
    pytest.param(
        _pack({"bt": 2**28 - 10, "n": "a", "t": 10, "v": 1}, {"n": "a", "t": 9, "v": 2}),
        [_rec("a", 2.0**28, value=1.0), _rec("a", NOW + 2**28 - 1, value=2.0)],
        id="2**28-boundary-on-the-sum",
    ),
    pytest.param(
        _pack({"bt": ABS, "n": "a", "t": -5, "v": 1}, {"n": "a", "t": -ABS, "v": 2}),
        [_rec("a", ABS - 5, value=1.0), _rec("a", NOW, value=2.0)],
        id="negative-offsets",
    ),
    pytest.param(
        _pack({"bn": "m/", "bs": 100, "n": "e"}, {"n": "e", "s": 5}, {"n": "p", "v": 7}),
        [
            _rec("m/e", NOW, sum=100.0),
            _rec("m/e", NOW, sum=105.0),
            _rec("m/p", NOW, value=7.0, sum=100.0),
        ],
        id="base-sum-makes-a-sum",
    ),
    pytest.param(
        _pack(
            {"bv": 10, "n": "a", "v": 1},
            {"n": "a", "v": -1.5},
            {"n": "b", "vs": "x"},
            {"n": "c", "s": 2},
            {"n": "d", "vb": True},
        ),
        [
            _rec("a", NOW, value=11.0),
            _rec("a", NOW, value=8.5),
            _rec("b", NOW, string_value="x"),
            _rec("c", NOW, sum=2.0),
            _rec("d", NOW, bool_value=True),
        ],
        id="base-value-applies-to-v-only",
    ),
    pytest.param(
        _pack(
            {"bu": "W", "n": "a", "v": 1},
            {"n": "b", "u": "kW", "v": 1},
            {"bu": "", "n": "c", "v": 1},
            {"n": "d", "u": "%", "v": 1},
        ),
        [
            _rec("a", NOW, "W", value=1.0),
            _rec("b", NOW, "kW", value=1.0),
            _rec("c", NOW, "", value=1.0),
            _rec("d", NOW, "%", value=1.0),
        ],
        id="units",
    ),
    pytest.param(
        _pack(
            {"n": "a", "s": 1.5, "v": 2, "ut": 600},
            {"n": "b", "vd": ""},
            {"n": "c", "vd": "_-8"},
            {"n": "d", "vs": ""},
            {"n": "e", "vb": False},
        ),
        [
            _rec("a", NOW, value=2.0, sum=1.5, update_time=600.0),
            _rec("b", NOW, data_value=b""),
            _rec("c", NOW, data_value=b"\xff\xef"),
            _rec("d", NOW, string_value=""),
            _rec("e", NOW, bool_value=False),
        ],
        id="value-kinds",
    ),
    pytest.param(
        _pack({"n": "a", "vd": "aGkgCh"}),
        [_rec("a", NOW, data_value=b"hi \n")],
        id="vd-nonzero-trailing-bits",
    ),
    pytest.param(
        _pack({"n": "a", "v": 1, "foo": [1, {"x_": 2}], "bfoo": "x", "x_y": None, "": 1}),
        [_rec("a", NOW, value=1.0)],
        id="unknown-fields-ignored",
    ),
    pytest.param(
        b'[{"n":"a","v":1,"v":2},{"n":5,"n":"b","v":3},{"n":"c","vs":"x","vs":"y"}]',
        [_rec("a", NOW, value=2.0), _rec("b", NOW, value=3.0), _rec("c", NOW, string_value="y")],
        id="duplicate-labels-last-wins",
    ),
    pytest.param(
        _pack({"bver": 10.0, **OK}, {"bver": 10, **OK}, {"bver": 1e1, **OK}),
        [_rec("a", NOW, value=1.0)] * 3,
        id="bver-10-spelled-three-ways",
    ),
    pytest.param(
        _pack({"bver": 1, **OK}, OK),
        [_rec("a", NOW, value=1.0)] * 2,
        id="bver-older",
    ),
    pytest.param(
        _pack({"n": "Az09-:./_", "v": 1}, {"n": "0", "v": 1}, {"n": "a:", "v": 1}),
        [_rec("Az09-:./_", NOW, value=1.0), _rec("0", NOW, value=1.0), _rec("a:", NOW, value=1.0)],
        id="name-alphabet",
    ),
    pytest.param(
        _pack(
            {"bt": ABS, "n": "a", "t": 60, "v": 1},
            {"n": "a", "t": 0, "v": 2},
            {"n": "a", "t": 30, "v": 3},
        ),
        [_rec("a", ABS + 60, value=1.0), _rec("a", ABS, value=2.0), _rec("a", ABS + 30, value=3.0)],
        id="order-kept",
    ),
    pytest.param(
        b'[{"n":"a","v":-0},{"n":"a","v":12345678901234567890},{"n":"a","v":1E2},'
        b'{"n":"a","v":1e-400},{"n":"a","v":9007199254740993}]',
        [
            _rec("a", NOW, value=0.0),
            _rec("a", NOW, value=1.2345678901234567e19),
            _rec("a", NOW, value=100.0),
            _rec("a", NOW, value=0.0),
            _rec("a", NOW, value=9007199254740992.0),
        ],
        id="numbers",
    ),
    pytest.param(
        _pack({"n": "a", "vs": "Machine Room \u00e9\U0001f600\u0000"}),
        [_rec("a", NOW, string_value="Machine Room \u00e9\U0001f600\u0000")],
        id="string-value-unicode",
    ),
]


@pytest.mark.parametrize(("payload", "expected"), RESOLVED)
def test_resolved(payload: bytes, expected: list[Record]) -> None:
    assert decode(payload, NOW) == expected
    assert decode(payload.decode(), NOW) == expected
    assert _careful.decode(payload, NOW) == expected


def test_typical_pack_takes_the_fast_path() -> None:
    payload = _pack(
        {"bn": "wat-dma-0001/", "bt": 1.7e9, "bu": "m3/s", "n": "flow", "v": 0.12},
        *({"n": "flow", "t": 60 * k, "v": 0.13} for k in range(1, 50)),
    )
    fast = _fast.decode(payload, NOW)  # raises Fallback if it cannot vouch
    assert len(fast) == 50
    assert fast == _careful.decode(payload, NOW)
    assert fast[-1] == Record("wat-dma-0001/flow", 1.7e9 + 60 * 49, "m3/s", 0.13)
    # A record of base fields only does not push a pack off the fast path either.
    with_context = _pack({"bn": "d/", "bt": ABS, "bu": "W"}, {"n": "a", "v": 1})
    assert _fast.decode(with_context, NOW) == [Record("d/a", ABS, "W", 1.0)]


def test_records_are_values() -> None:
    a = Record("a", 1.0, value=2.0)
    assert a == Record("a", 1.0, value=2.0)
    assert a != Record("a", 1.0, value=3.0)
    assert len({a, Record("a", 1.0, value=2.0)}) == 1
    with pytest.raises(AttributeError):
        a.value = 3.0  # type: ignore[misc]


def test_received_at_must_be_finite() -> None:
    with pytest.raises(ValueError, match="received_at"):
        decode(b"[]", math.nan)


def test_error_attributes_and_pickling() -> None:
    with pytest.raises(SenMLError) as caught:
        decode(_pack(OK, {"n": "a b", "v": 1}), NOW)
    err = caught.value
    assert isinstance(err, WireError)
    assert str(err) == (
        "bad_name at record 1 (field n): resolved name 'a b' must match "
        "[A-Za-z0-9][A-Za-z0-9-:./_]* (RFC 8428 §4.5.1)"
    )
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.reason, clone.index, clone.field, str(clone)) == (
        err.reason,
        err.index,
        err.field,
        str(err),
    )
    assert str(SenMLError(R.NOT_ARRAY, "the pack is a JSON object")) == (
        "not_array: the pack is a JSON object"
    )


def test_errors_do_not_chain_the_fast_path() -> None:
    with pytest.raises(SenMLError) as caught:
        decode(b"[1]", NOW)
    assert caught.value.__context__ is None


# ---- encoding ---------------------------------------------------------------------------------

ENCODED = [
    pytest.param(
        [
            Record("wat-dma-0001/flow", 1.7e9, "m3/s", 0.12),
            Record("wat-dma-0001/flow", 1.7e9 + 60, "m3/s", 0.13),
        ],
        b'[{"bn":"wat-dma-0001/flow","bt":1700000000.0,"bu":"m3/s","v":0.12},{"v":0.13,"t":60.0}]',
        id="one-sensor",
    ),
    pytest.param(
        [
            Record("city/wat-0001/flow", ABS, "m3/s", 1.0),
            Record("city/wat-0001/pressure", ABS, "bar", 2.0),
            Record("city/ene-0002:power", ABS + 1, None, sum=3.0, update_time=60.0),
        ],
        b'[{"bn":"city/","bt":1600000000.0,"n":"wat-0001/flow","u":"m3/s","v":1.0},'
        b'{"n":"wat-0001/pressure","u":"bar","v":2.0},'
        b'{"n":"ene-0002:power","s":3.0,"t":1.0,"ut":60.0}]',
        id="common-prefix-cut-at-slash",
    ),
    pytest.param(
        [Record("urn:dev:ow:1a", ABS, value=1.0), Record("urn:dev:ow:1b", ABS, string_value="on")],
        b'[{"bn":"urn:dev:ow:","bt":1600000000.0,"n":"1a","v":1.0},{"n":"1b","vs":"on"}]',
        id="common-prefix-cut-at-colon",
    ),
    pytest.param(
        [Record("a/x", ABS, value=1.0), Record("b/x", ABS, data_value=b"hi \n")],
        b'[{"bt":1600000000.0,"n":"a/x","v":1.0},{"n":"b/x","vd":"aGkgCg"}]',
        id="no-common-prefix",
    ),
    pytest.param(
        [Record("d/", ABS, value=1.0), Record("d/a", ABS, bool_value=True)],
        b'[{"bn":"d/","bt":1600000000.0,"v":1.0},{"n":"a","vb":true}]',
        id="empty-n-under-base-name",
    ),
    pytest.param(
        [Record("a", 1_700_000_000.1, value=1.0), Record("a", 268435456.1, value=2.0)],
        b'[{"bn":"a","v":1.0,"t":1700000000.1},{"v":2.0,"t":268435456.1}]',
        id="offset-that-does-not-round-trip",
    ),
    pytest.param([], b"[]", id="empty"),
]


@pytest.mark.parametrize(("records", "expected"), ENCODED)
def test_encode(records: list[Record], expected: bytes) -> None:
    assert encode(records) == expected
    assert decode(expected, NOW) == records


def test_encode_offset_fallback_is_needed() -> None:
    # The vector above only proves something if the naive offset really fails.
    bt, t = 1_700_000_000.1, 268435456.1
    assert bt + (t - bt) != t


BAD_RECORDS = [
    pytest.param(
        [Record("a", ABS, value=1.0), Record("", ABS, value=1.0)],
        R.BAD_NAME,
        1,
        "n",
        id="empty-name",
    ),
    pytest.param([Record("a", ABS)], R.NO_VALUE, 0, None, id="no-value"),
    pytest.param(
        [Record("a", ABS, value=1.0, string_value="x")], R.MULTIPLE_VALUES, 0, "vs", id="two-values"
    ),
    pytest.param([Record("a", math.inf, value=1.0)], R.NOT_FINITE, 0, "t", id="inf-time"),
    pytest.param([Record("a", ABS, value=math.nan)], R.NOT_FINITE, 0, "v", id="nan-value"),
    pytest.param(
        [Record("a", ABS, sum=1.0, update_time=-math.inf)], R.NOT_FINITE, 0, "ut", id="inf-ut"
    ),
]


@pytest.mark.parametrize(("records", "reason", "index", "field"), BAD_RECORDS)
def test_encode_refuses(
    records: list[Record], reason: SenMLReason, index: int, field: str | None
) -> None:
    for encoder in (encode, encode_resolved):
        with pytest.raises(SenMLError) as caught:
            encoder(records)
        assert (caught.value.reason, caught.value.index, caught.value.field) == (
            reason,
            index,
            field,
        )


def test_to_resolved() -> None:
    record = Record("d/a", ABS, "W", data_value=b"\xff", sum=2.0, update_time=5.0)
    assert to_resolved(record) == {"n": "d/a", "t": ABS, "u": "W", "vd": "_w", "s": 2.0, "ut": 5.0}


# ---- round trip -------------------------------------------------------------------------------

_NAME_TAIL = st.from_regex(r"[A-Za-z0-9\-:./_]{0,12}", fullmatch=True)
_names = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-:./_]{0,30}", fullmatch=True),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(["city/", "urn:dev:ow:10e2:", "wat-dma-0001/", "x"]),
        _NAME_TAIL,
    ),
)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_times = st.one_of(
    st.floats(min_value=2.0**28, allow_infinity=False),
    st.floats(min_value=1.6e9, max_value=1.8e9),
)
_units = st.one_of(st.none(), st.sampled_from(["W", "m3/s", "%RH", "Cel"]), st.text(max_size=5))


@st.composite
def records(
    draw: st.DrawFn,
    name: st.SearchStrategy[str] = _names,
    unit: st.SearchStrategy[str | None] = _units,
) -> Record:
    kind = draw(st.sampled_from(["v", "vs", "vb", "vd", "s"]))
    value = draw(_finite) if kind == "v" else None
    string_value = draw(st.text(max_size=20)) if kind == "vs" else None
    bool_value = draw(st.booleans()) if kind == "vb" else None
    data_value = draw(st.binary(max_size=20)) if kind == "vd" else None
    total = draw(_finite) if kind == "s" else draw(st.none() | _finite)
    return Record(
        draw(name),
        draw(_times),
        draw(unit),
        value,
        string_value,
        bool_value,
        data_value,
        total,
        draw(st.none() | _finite),
    )


_packs = st.one_of(
    st.lists(records(), max_size=12),
    # shapes that make the encoder factor: one sensor, one unit
    st.lists(records(name=st.just("wat-dma-0001/flow"), unit=st.just("m3/s")), max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(_packs, _finite)
def test_decode_inverts_encode(items: list[Record], received_at: float) -> None:
    for encoded in (encode(items), encode_resolved(items)):
        back = decode(encoded, received_at)
        assert back == items
        # == would let -0.0 pass for 0.0; the encoded bytes tell them apart.
        assert msgspec.json.encode(back) == msgspec.json.encode(items)


def test_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_record, "NAME_CACHE_SIZE", 3)
    monkeypatch.setattr(_fast, "NAME_CACHE_SIZE", 3)
    _record.valid_names.clear()  # a cache: emptying it only costs re-checks
    payload = _pack(*({"n": f"s{i}", "v": i} for i in range(10)))
    assert decode(payload, NOW) == [Record(f"s{i}", NOW, value=float(i)) for i in range(10)]
    assert 0 < len(_record.valid_names) <= 3
    assert _careful.decode(payload, NOW) == decode(payload, NOW)
    assert 0 < len(_record.valid_names) <= 3
