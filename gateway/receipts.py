"""Pack identity and receipts: the codec shared by gateways and ingestion (pure, no I/O).

A gateway numbers every pack it publishes (the outbox's sequence) and says so in an MQTT 5 user
property on the PUBLISH (:data:`PACK`, ``<stream>:<seq>:<oldest>``), not in the payload: the
payload stays a plain RFC 8428 pack that any SenML consumer reads unchanged. A field in the pack
would have to ride on a record (RFC 8428 has no pack-level header), would change the bytes other
consumers validate, and a strict decoder may refuse a field it does not know; a user property
costs a few bytes, and where it is lost (an MQTT 3.1.1 bridge, a third-party device) the pack is
simply unnumbered and ingested as before.

One property rather than one per field: paho decodes every property of every message in pure
Python, some 20-30 µs each here, and with three the worker spent about 30 % more CPU per reading
at packs of 10 (``bench/bench_ingest.py``, 20.6 against 14.5 µs). The three separate properties
(:data:`SEQ`, :data:`STREAM`, :data:`OLDEST`) of the first gateways that numbered their packs
are still understood.

- ``seq``: the pack's sequence number, growing for the life of the outbox file.
- ``stream``: a random id made when the outbox file was created. A replaced or wiped outbox
  starts numbering from 1 again; without this its packs would be taken for ones already stored.
- ``oldest``: the lowest sequence still in the outbox when the pack was sent. The gateway never
  sends anything below it again, so the platform may forget those packs (the ledger's pruning).

Once a pack is stored (or quarantined) ingestion publishes a receipt on
``ssc/v1/<gateway_id>/down``, one JSON object per stream and flush::

    {"type": "receipt", "stream": "3f0c...", "ranges": [[1, 40], [42, 42]]}

``ranges`` are inclusive, sorted and disjoint. Other ``type`` values are commands for later
versions; a gateway ignores what it does not know.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.errors import GatewayError

__all__ = [
    "OLDEST",
    "PACK",
    "SEQ",
    "STREAM",
    "PackId",
    "Receipt",
    "ReceiptError",
    "decode_receipt",
    "encode_receipt",
    "pack_id",
    "ranges",
]

PACK = "pack"  # "<stream>:<seq>:<oldest>"; the stream may hold ":", the numbers may not
SEQ = "seq"
STREAM = "stream"
OLDEST = "oldest"
RECEIPT = "receipt"

# A stream id is ours (32 hex digits) but arrives over the wire: bound it before it is stored.
_MAX_STREAM = 64


class ReceiptError(GatewayError, ValueError):
    """A user property or a receipt that does not follow the contract; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PackId:
    """Who sent a pack and its place in that sender's stream."""

    stream: str
    seq: int
    oldest: int

    def __post_init__(self) -> None:
        if not self.stream or len(self.stream) > _MAX_STREAM:
            raise ReceiptError(f"stream must be 1 to {_MAX_STREAM} characters")
        if not 1 <= self.seq < 2**63 or not 0 <= self.oldest <= self.seq:
            raise ReceiptError(f"need 1 <= seq < 2**63 and 0 <= oldest <= seq: {self}")

    def properties(self) -> list[tuple[str, str]]:
        """The MQTT 5 user property that carries it."""
        return [(PACK, f"{self.stream}:{self.seq}:{self.oldest}")]


def pack_id(user_properties: Iterable[tuple[str, str]] | None) -> PackId | None:
    """The pack's identity from its user properties; None for an unnumbered pack (neither
    ``pack`` nor ``seq``).

    Raises :class:`ReceiptError` when one is there but the identity is malformed.
    """
    found = dict(user_properties or ())
    if PACK in found:
        parts = found[PACK].rsplit(":", 2)
        if len(parts) != 3 or not all(n.isascii() and n.isdigit() for n in parts[1:]):
            raise ReceiptError(f"{PACK} must be <stream>:<seq>:<oldest>, both integers")
        return PackId(parts[0], int(parts[1]), int(parts[2]))
    if SEQ not in found:
        return None
    try:
        seq = int(found[SEQ])
        oldest = int(found.get(OLDEST, "0"))
    except ValueError:
        raise ReceiptError(f"{SEQ} and {OLDEST} must be integers") from None
    stream = found.get(STREAM)
    if stream is None:
        raise ReceiptError(f"a numbered pack needs a {STREAM} property")
    return PackId(stream, seq, oldest)


@dataclass(frozen=True, slots=True)
class Receipt:
    stream: str
    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and any(lo <= seq <= hi for lo, hi in self.ranges)

    def seqs(self) -> Iterable[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)


def ranges(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint, inclusive ranges covering ``seqs`` (duplicates allowed)."""
    result: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if result and result[-1][1] == seq - 1:
            result[-1] = (result[-1][0], seq)
        else:
            result.append((seq, seq))
    return tuple(result)


def encode_receipt(stream: str, seqs: Iterable[int]) -> bytes:
    return json.dumps(
        {"type": RECEIPT, "stream": stream, "ranges": [list(r) for r in ranges(seqs)]},
        separators=(",", ":"),
    ).encode()


def decode_receipt(payload: bytes) -> Receipt | None:
    """The receipt in a down message; None for another kind of message (a later command).

    Raises :class:`ReceiptError` for a receipt that is malformed.
    """
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ReceiptError("not JSON") from None
    if not isinstance(message, dict):
        raise ReceiptError("not a JSON object")
    if message.get("type") != RECEIPT:
        return None
    stream = message.get("stream")
    raw = message.get("ranges")
    if not isinstance(stream, str) or not isinstance(raw, list):
        raise ReceiptError("a receipt needs a string 'stream' and a list 'ranges'")
    checked: list[tuple[int, int]] = []
    for item in raw:
        if not (
            isinstance(item, Sequence)
            and len(item) == 2
            and all(type(v) is int for v in item)
            and 1 <= item[0] <= item[1]
        ):
            raise ReceiptError(f"a range must be [lo, hi] with 1 <= lo <= hi, got {item!r}")
        checked.append((item[0], item[1]))
    return Receipt(stream, tuple(checked))
