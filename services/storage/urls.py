"""One database URL, spelled for each driver that needs it."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^(postgres|postgresql)(\+\w+)?://")


def libpq_url(url: str) -> str:
    """The URL for psycopg / libpq (``postgresql://``)."""
    return _SCHEME.sub("postgresql://", url, count=1)


def sqlalchemy_url(url: str) -> str:
    """The URL for SQLAlchemy with the psycopg 3 driver (``postgresql+psycopg://``)."""
    return _SCHEME.sub("postgresql+psycopg://", url, count=1)


def with_database(url: str, database: str) -> str:
    """The same server, another database."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority, _, _ = rest.partition("/")
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")
