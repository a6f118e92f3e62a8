"""Who is calling: an API key checked against ``api_keys``, with a small cache of verified keys.

Checking a secret costs one scrypt (~40 ms, 16 MiB), too much for every request, so a verified
key is remembered in-process for :data:`CACHE_TTL_S` seconds, keyed by a SHA-256 of the whole
presented key (the cache never holds a secret). Bound: a revoked key keeps working on a process
that verified it for at most ``CACHE_TTL_S`` (5 s) more; a role change likewise. The cache holds
at most :data:`CACHE_SIZE` keys, least recently used evicted first. Refusals are not cached, so
a key registered a moment ago works at once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from . import keys

CACHE_TTL_S = 5.0
CACHE_SIZE = 1024
# last_used_at is written at most this often per key and process (and the SQL refuses more
# than once a minute across processes).
TOUCH_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller an API key stands for."""

    key_id: str
    name: str
    role: str

    def can(self, permission: str) -> bool:
        return permission in keys.ROLE_PERMISSIONS.get(self.role, frozenset())


@dataclass(slots=True)
class _Entry:
    principal: Principal
    expires: float


class Authenticator:
    """Turns a presented key into a Principal (or None), thread-safe, with the cache above."""

    def __init__(
        self, pool: ConnectionPool, *, ttl_s: float = CACHE_TTL_S, size: int = CACHE_SIZE
    ) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._size = size
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Principal | None:
        parts = keys.split_token(token)
        if parts is None:
            return None
        fingerprint = hashlib.sha256(token.strip().encode()).digest()
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(fingerprint)
            if entry is not None and entry.expires > now:
                self._cache.move_to_end(fingerprint)
                principal: Principal | None = entry.principal
            else:
                self._cache.pop(fingerprint, None)
                principal = None
        if principal is None:
            principal = self._verify(*parts)
            if principal is None:
                return None
            with self._lock:
                self._cache[fingerprint] = _Entry(principal, now + self._ttl)
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        self._touch(principal.key_id, now)
        return principal

    def _verify(self, key_id: str, secret: str) -> Principal | None:
        with self._pool.connection() as conn:
            stored = keys.find_key(conn, key_id)
        if stored is None or stored.revoked:
            return None
        if not keys.verify_secret(secret, stored.secret_hash):
            return None
        return Principal(stored.id, stored.name, stored.role)

    def _touch(self, key_id: str, now: float) -> None:
        with self._lock:
            if now - self._touched.get(key_id, -TOUCH_INTERVAL_S) < TOUCH_INTERVAL_S:
                return
            self._touched[key_id] = now
            if len(self._touched) > self._size:
                self._touched.clear()
        with self._pool.connection() as conn:
            keys.touch_key(conn, key_id)

    def forget(self) -> None:
        """Drop every cached key (tests; a revocation that must bite at once in this process)."""
        with self._lock:
            self._cache.clear()
