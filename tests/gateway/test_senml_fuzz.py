"""Fuzzing the decoder: whatever arrives, ``decode`` returns records or raises SenMLError.

Every input also runs through the careful path alone, and both must give the same outcome (the
same records, or the same reason, index and field): the fast path may only ever answer sooner.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import SenMLError
from gateway.senml import Record, _careful, decode

NOW = 1_700_000_000.0
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Outcome = tuple[Any, ...]


def _outcome(decoder: Any, payload: bytes | str) -> Outcome:
    try:
        records = decoder(payload, NOW)
    except SenMLError as err:
        return ("refused", err.reason, err.index, err.field)
    # Anything but a list of records or a SenMLError fails the test by propagating.
    assert isinstance(records, list)
    assert all(isinstance(record, Record) for record in records)
    return ("ok", repr(records))  # repr tells -0.0 from 0.0


def _check(payload: bytes | str) -> None:
    outcome = _outcome(decode, payload)
    assert outcome == _outcome(_careful.decode, payload)
    if outcome[0] == "refused":
        _, reason, index, field = outcome
        assert isinstance(reason, str)
        assert index is None or isinstance(index, int)
        assert field is None or isinstance(field, str)


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: json.dumps writes them as NaN / Infinity
    st.text(max_size=8),
)
_labels = st.one_of(
    st.sampled_from(
        [
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
            "x_",
            "foo",
            "bn_",
        ]
    ),
    st.text(max_size=4),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_labels, inner, max_size=5),
    max_leaves=20,
)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(payload: bytes) -> None:
    _check(payload)


@FUZZ
@given(_json_values)
def test_arbitrary_json(value: object) -> None:
    _check(json.dumps(value))


# Records that are mostly valid, so that the fuzzer spends its time past the first check.
_names = st.sampled_from(["a", "dev/", "urn:dev:ow:1:", "temp", "", "-x", "w/1", "é"])
_numbers = st.one_of(
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 2**28, 2**28 - 1, 1e308, -1e308, 1.7e9, 10, 11]),
)
_field_values: dict[str, st.SearchStrategy[object]] = {
    "bn": _names,
    "n": _names,
    "bu": st.sampled_from(["W", "", "%RH"]),
    "u": st.sampled_from(["W", "Cel"]),
    "bt": _numbers,
    "t": _numbers,
    "bv": _numbers,
    "v": _numbers,
    "bs": _numbers,
    "s": _numbers,
    "ut": _numbers,
    "bver": st.sampled_from([1, 5, 10, 11, 10.0, 0]),
    "vs": st.text(max_size=5),
    "vb": st.booleans(),
    "vd": st.sampled_from(["", "aGkgCg", "aGkgCg==", "_-8", "a", "a+b/"]),
}


@st.composite
def _record(draw: st.DrawFn) -> dict[str, object]:
    labels = draw(st.lists(st.sampled_from(sorted(_field_values)), max_size=6, unique=True))
    record = {label: draw(_field_values[label]) for label in labels}
    if draw(st.integers(0, 9)) == 0:  # now and then, an unknown or mandatory label
        record[draw(st.sampled_from(["x_", "foo", "_", "bx"]))] = draw(_json_scalars)
    return record


_packs = st.lists(_record(), max_size=8)


@FUZZ
@given(_packs)
def test_generated_packs(pack: list[dict[str, object]]) -> None:
    _check(json.dumps(pack))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    base = [
        {"bn": "wat-dma-0001/", "bt": 1.7e9, "bu": "m3/s", "n": "flow", "v": 0.12},
        {"n": "flow", "t": 60, "v": 0.13},
        {"n": "level", "u": "m", "t": 60, "v": 2.5},
        {"n": "valve", "vb": True},
        {"n": "fw", "vs": "1.2.3"},
        {"n": "energy", "u": "J", "s": 1234.5},
    ]
    payload = bytearray(json.dumps(base, separators=(",", ":")).encode())
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(payload)))
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip" and position < len(payload):
            payload[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "delete":
            del payload[position : position + draw(st.integers(1, 8))]
        elif action == "insert":
            payload[position:position] = draw(
                st.sampled_from(
                    [
                        b"_",
                        b",",
                        b"]",
                        b"{",
                        b'"',
                        b"-",
                        b"e9",
                        b"NaN",
                        b"\\u0000",
                        b"\xff",
                        b" ",
                        b'"x_":1,',
                        b"0" * 400,
                    ]
                )
            )
        else:
            del payload[position:]
    return bytes(payload)


@FUZZ
@given(_mutated())
def test_mutated_packs(payload: bytes) -> None:
    _check(payload)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutated(), _packs.map(json.dumps)))
def test_many_more_packs(payload: bytes | str) -> None:
    _check(payload)
