"""SenML (RFC 8428) JSON codec: pure functions over bytes and values, no I/O.

``decode(payload, received_at)`` parses a pack, resolves base fields (§4.6) and validates every
rule the wire contract relies on, returning immutable :class:`Record` values or raising
:class:`~gateway.errors.SenMLError` with a reason code, the record index and the field.
``encode`` and ``encode_resolved`` write records back as packs that decode to the same records.

Readings we chose where the RFC leaves room (each tested in ``tests/gateway``):

- an empty pack ``[]`` is valid and yields no records;
- a record of base fields only (``{"bn": ...}``) sets context and yields no record, as in the
  RFC's own §5.1.7; any other record needs a value or a sum (§4.2);
- ``bv`` applies to ``v`` only; a base sum gives every following record a sum (§4.5.4);
- records keep the pack's order: §4.6's "chronological order" describes a resolved pack as
  written out, and reordering here would hide from the caller which record an index means;
- a JSON object with a repeated label keeps the last one (RFC 8259 §4 leaves it open; msgspec
  and the standard library both do this, so the fast and the careful path agree);
- JSON only: CBOR (§6), XML (§7) and EXI (§8) are not carried on our wire.

Decoding takes a fast path (``_fast``: msgspec typed decoding and one tight loop) and falls back
on the careful path (``_careful``) for anything the fast path cannot vouch for, so speed never
changes an answer: the careful path alone defines what is accepted.
"""

from __future__ import annotations

import math

from gateway.errors import SenMLError, SenMLReason
from gateway.senml import _careful, _fast
from gateway.senml._encode import encode, encode_resolved, to_resolved
from gateway.senml._record import RELATIVE_TIME_LIMIT, SENML_VERSION, Record

__all__ = [
    "RELATIVE_TIME_LIMIT",
    "SENML_VERSION",
    "Record",
    "SenMLError",
    "SenMLReason",
    "decode",
    "encode",
    "encode_resolved",
    "to_resolved",
]


def decode(payload: bytes | str, received_at: float) -> list[Record]:
    """Decode, resolve and validate a SenML JSON pack.

    ``received_at`` (seconds since the Unix epoch) is "now" for relative times: a resolved
    time ``bt + t`` below 2**28 is added to it (RFC 8428 §4.5.3). Raises
    :class:`~gateway.errors.SenMLError` for a pack the sender got wrong, ``ValueError`` for a
    non-finite ``received_at`` (our mistake, not the sender's).
    """
    if not math.isfinite(received_at):
        raise ValueError(f"received_at must be a finite number of seconds, got {received_at!r}")
    try:
        return _fast.decode(payload, received_at)
    except _fast.Fallback:
        pass  # outside the handler, so a SenMLError does not chain onto the Fallback
    return _careful.decode(payload, received_at)
