"""API keys: roles and their permissions, the secret's scrypt hash, and the ``api_keys`` table.

A key is shown to its owner once, as ``<id>.<secret>``; the table keeps the public id and an
scrypt hash of the secret with a salt of its own, so a leaked table does not leak keys. No
FastAPI here: ``cli/keys.py`` and ``auth.py`` are the shells; the caller owns the connection and
its transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import TupleRow

PERMISSIONS = (
    "read",
    "stream",
    "alerts:write",
    "registry:write",
    "keys:admin",
    # City settings (services.storage.city_settings): admins only; a district's overrides are
    # registry data (registry:write).
    "settings:write",
)

_OPERATOR = frozenset({"read", "stream", "alerts:write"})
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": _OPERATOR,
    "engineer": _OPERATOR | {"registry:write"},
    "service": frozenset({"read", "stream"}),
    "admin": frozenset(PERMISSIONS),
}
ROLES = tuple(ROLE_PERMISSIONS)

# scrypt cost: n=2**14, r=8, p=1 is the interactive-login setting of the scrypt paper and
# Python's docs (16 MiB, ~40 ms on one core); the verified-key cache in auth.py means a
# client pays it about once per cache lifetime, not per request.
_N, _R, _P = 2**14, 8, 1
_DKLEN = 32
_SALT_BYTES = 16


class ApiKeyError(Exception):
    """A key operation was refused; ``reason`` says why (unknown-role, unknown-key)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as listed: never its secret."""

    id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), the parameters stored so they can change later."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` hashes to ``stored``; compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a presented ``<id>.<secret>``, or None when it is not that shape."""
    key_id, dot, secret = token.strip().partition(".")
    if not dot or not key_id or not secret or len(token) > 512:
        return None
    return key_id, secret


def create_key(conn: psycopg.Connection[TupleRow], name: str, role: str) -> tuple[str, str]:
    """Store a new key; return ``(key_id, "<key_id>.<secret>")``, the only time the secret is
    seen. Commits nothing: the caller's transaction does."""
    if role not in ROLE_PERMISSIONS:
        raise ApiKeyError("unknown-role", f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not name.strip():
        raise ApiKeyError("bad-name", "a key needs a name saying who holds it")
    key_id = "up" + secrets.token_hex(6)
    # token_urlsafe never yields '.', so the first dot of a presented key ends the id.
    secret = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_keys (id, name, role, secret_hash) VALUES (%s, %s, %s, %s)",
        (key_id, name.strip(), role, hash_secret(secret)),
    )
    return key_id, f"{key_id}.{secret}"


def revoke_key(conn: psycopg.Connection[TupleRow], key_id: str) -> datetime:
    """Mark the key revoked (kept for the record); return when. Revoking twice keeps the first
    time. Raises ApiKeyError for an unknown id."""
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s "
        "RETURNING revoked_at",
        (key_id,),
    ).fetchone()
    if row is None:
        raise ApiKeyError("unknown-key", f"no API key {key_id!r}")
    revoked_at = row[0]
    assert isinstance(revoked_at, datetime)
    return revoked_at


def list_keys(conn: psycopg.Connection[TupleRow], *, include_revoked: bool = True) -> list[KeyInfo]:
    """Every key, oldest first, without secrets."""
    rows = conn.execute(
        "SELECT id, name, role, created_at, revoked_at, last_used_at FROM api_keys "
        "WHERE %s OR revoked_at IS NULL ORDER BY created_at, id",
        (include_revoked,),
    ).fetchall()
    return [KeyInfo(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What authentication needs of a key row."""

    id: str
    name: str
    role: str
    secret_hash: str
    revoked: bool


def find_key(conn: psycopg.Connection[TupleRow], key_id: str) -> StoredKey | None:
    row = conn.execute(
        "SELECT id, name, role, secret_hash, revoked_at IS NOT NULL FROM api_keys WHERE id = %s",
        (key_id,),
    ).fetchone()
    return None if row is None else StoredKey(*row)


def touch_key(conn: psycopg.Connection[TupleRow], key_id: str) -> None:
    """Record use, at most once a minute (the condition keeps writes rare across replicas)."""
    conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = %s "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (key_id,),
    )
