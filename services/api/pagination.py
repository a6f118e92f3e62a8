"""Keyset pagination: an opaque cursor holding the sort key of the last item served.

Keyset (``WHERE key > last ORDER BY key LIMIT n``) rather than OFFSET: each page costs one index
range scan however deep the walk, and rows inserted meanwhile neither repeat nor vanish from
the rest of the walk. The cursor is base64url JSON so clients treat it as opaque; a tampered one
is a 422 naming ``query.cursor``, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

from .problems import invalid

T = TypeVar("T")

MAX_LIMIT = 1000

Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description="items per page (at most 1000)", examples=[100])
]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page; absent: first page"),
]


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = Field(default=None, examples=["WyJ3bS0wMDQyIl0"])


def encode_cursor(key: Any) -> str:
    raw = json.dumps(key, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, expected: type) -> Any:
    """The sort key in ``cursor`` (None for the first page); must be of ``expected`` type."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, expected) or isinstance(key, bool):
        raise invalid("query.cursor", "not a cursor this list handed out")
    return key


def page_of(rows: list[T], limit: int, key_of: Any) -> tuple[list[T], str | None]:
    """Split ``limit + 1`` fetched rows into the page and the cursor of the next one."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(key_of(page[-1]))
