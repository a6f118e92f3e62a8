"""The resolved record and the small rules both decoding paths and the encoder share."""

from __future__ import annotations

import base64
import binascii
import re

import msgspec

# RFC 8428 §4.5.3: resolved times below 2**28 are relative to "now"; at or above, absolute.
RELATIVE_TIME_LIMIT = 2.0**28

# RFC 8428 §4.4: the version of the format this codec implements. A pack with a larger bver
# MUST NOT be used; smaller ones (earlier drafts, e.g. the bver 5 in §5.1.2) read the same way.
SENML_VERSION = 10

BASE_LABELS = ("bn", "bt", "bu", "bv", "bs", "bver")
REGULAR_LABELS = ("n", "u", "v", "vs", "vb", "vd", "s", "t", "ut")
VALUE_LABELS = ("v", "vs", "vb", "vd")


class Record(msgspec.Struct, frozen=True, gc=False):
    """One resolved SenML record (RFC 8428 §4.6): no base fields, absolute time.

    Exactly one of ``value``, ``string_value``, ``bool_value`` and ``data_value`` is set, or none
    of them when ``sum`` is set. ``time`` and ``update_time`` are seconds (``time`` since the
    Unix epoch). Compares by value; hashable; ``gc=False`` because it holds no containers.
    """

    name: str
    time: float
    unit: str | None = None
    value: float | None = None
    string_value: str | None = None
    bool_value: bool | None = None
    data_value: bytes | None = None
    sum: float | None = None
    update_time: float | None = None


# RFC 8428 §4.5.1. Written out rather than \w so that no non-ASCII letter slips through.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
name_is_valid = _NAME.fullmatch

# Names repeat (a sensor reports every minute), so checked names are remembered. The bound keeps
# a stream of distinct names from growing memory; 65,536 names cover a large city's gateway
# fleet as seen by one worker, and clearing when full costs one re-check per name.
NAME_CACHE_SIZE = 65_536
valid_names: set[str] = set()


def check_name(name: str) -> bool:
    """Return whether ``name`` is a valid resolved name, remembering the valid ones."""
    if name in valid_names:
        return True
    if not name_is_valid(name):
        return False
    if len(valid_names) >= NAME_CACHE_SIZE:
        valid_names.clear()
    valid_names.add(name)
    return True


# RFC 8428 §5 / RFC 4648 §5: base64url, padding omitted. A length of 1 mod 4 cannot come from
# any octet string. Non-zero trailing bits (e.g. "aGkgCh" for "aGkgCg") are accepted, as
# RFC 4648 §3.5 allows: they decode to the same octets, and refusing them would quarantine data
# whose meaning is not in doubt.
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def decode_data_value(text: str) -> bytes | None:
    """Decode a ``vd`` string, or return ``None`` when it is not unpadded base64url."""
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:  # pragma: no cover - the pattern and length check exclude it
        return None


def encode_data_value(data: bytes) -> str:
    """Encode octets as a ``vd`` string: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
