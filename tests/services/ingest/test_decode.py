"""The worker's pure core (services/ingest/decode.py): bytes in, rows and entries out, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway import topics
from gateway.limits import MAX_PACK_BYTES, MAX_PACK_RECORDS
from gateway.receipts import PackId
from gateway.senml import Record, encode
from services.ingest.decode import (
    GatewayStatus,
    PendingSensor,
    open_message,
    prepare,
    validate_pack,
)
from services.ingest.validate import Reason, Sensor, Validator

NOW = 1_764_000_000.0
SENSORS = {"fdr-1": Sensor(key=1, id="fdr-1", kind="feeder_meter", gateway_id="gw-a")}


@dataclass
class _Message:
    topic: str
    payload: bytes
    received_at: float = NOW
    retained: bool = False
    properties: list[tuple[str, str]] | None = None


def _voltages(*names: str, value: float = 230.0) -> bytes:
    return encode(Record(name=f"{n}/voltage", time=NOW - 1, unit="V", value=value) for n in names)


@pytest.mark.parametrize(
    ("payload", "rows", "reasons", "unknown"),
    [
        (_voltages("fdr-1"), 1, [], []),
        (_voltages("fdr-1", "ghost-1"), 1, [Reason.UNKNOWN_SENSOR], ["ghost-1"]),
        (_voltages("fdr-1", value=1e9), 0, [Reason.OUT_OF_RANGE], []),
        (b"not json", 0, [Reason.NOT_SENML], []),
        (b"[" + b" " * MAX_PACK_BYTES + b"]", 0, [Reason.PACK_TOO_LARGE], []),
        (
            _voltages(*(["fdr-1"] * (MAX_PACK_RECORDS + 1))),
            MAX_PACK_RECORDS,
            [Reason.TOO_MANY_RECORDS],
            [],
        ),
    ],
    ids=["good", "unknown", "range", "not-senml", "too-large", "too-many"],
)
def test_validate_pack(
    payload: bytes, rows: int, reasons: list[Reason], unknown: list[str]
) -> None:
    result = validate_pack(payload, "gw-a", SENSORS, NOW)
    assert (len(result.rows), [e.reason for e in result.entries], result.unknown) == (
        rows,
        reasons,
        unknown,
    )


def test_validate_pack_bounds_the_entries_of_one_pack() -> None:
    result = validate_pack(
        _voltages(*(f"ghost-{i}" for i in range(5))), "gw-a", {}, NOW, max_entries=2
    )
    assert [e.reason for e in result.entries] == [
        Reason.UNKNOWN_SENSOR,
        Reason.UNKNOWN_SENSOR,
        Reason.TOO_MANY_REJECTS,
    ]


def test_a_batch_is_prepared_with_named_parts_and_left_as_it_was() -> None:
    up, status = topics.up_topic("gw-a"), topics.status_topic("gw-a")
    identity = PackId("s1", 7, 7)
    messages = [
        _Message(up, _voltages("fdr-1", "ghost-1"), properties=identity.properties()),
        _Message("nowhere", b"x"),
        _Message(status, b"online", retained=True),
        _Message(up, _voltages("fdr-1"), retained=True),
    ]
    opened = [open_message(m) for m in messages]
    assert [o.retained_ignored for o in opened] == [False, False, False, True]
    prepared = prepare(opened, SENSORS, Validator(), register_unknown=True)
    again = prepare(opened, SENSORS, Validator(), register_unknown=True)
    assert prepared == again
    assert len(prepared.rows) == 1
    assert prepared.status == [GatewayStatus("gw-a", online=True, seen_now=False)]
    assert prepared.pending == {PendingSensor("ghost-1", "gw-a")}
    assert prepared.gateway_ids == ["gw-a", None, "gw-a", "gw-a"]
    assert [n.identity if n else None for n in prepared.numbered] == [identity, None, None, None]
    assert prepared.quarantined_message == [0, 1]
    assert [[e.reason for e in q.entries] for q in prepared.quarantine] == [
        [Reason.UNKNOWN_SENSOR],
        [Reason.BAD_TOPIC],
    ]
    assert [(e.rows, e.quarantine) for e in prepared.ends] == [(1, 1), (1, 2), (1, 2), (1, 2)]
