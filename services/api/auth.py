"""Who is calling: an API key checked against ``api_keys``, with a small cache of verified keys.

Checking a secret costs one scrypt (~40 ms, 16 MiB), too much for every request, so a verified
key is remembered in-process, keyed by a SHA-256 of the whole presented key (the cache never
holds a secret). Every :data:`CACHE_TTL_S` seconds a remembered key is looked up again, by id
only (the secret was proven once, and the fingerprint proves it is the same one), so a revoked
key keeps working on a process for at most ``CACHE_TTL_S`` (5 s) more; a role change likewise.
Only one thread verifies a given key at a time: under load, the requests that arrive while a
key is being checked wait for that check rather than each paying a scrypt (bench/bench_api.py
measured seconds of tail latency from that herd). The cache holds at most :data:`CACHE_SIZE`
keys, least recently used evicted first. Refusals are not cached, so a key registered a moment
ago works at once.

A failed check costs what a successful one does: an unknown or revoked key id still pays one
scrypt, against a dummy hash made with the same parameters, so the time of a refusal does not
tell whether an id exists (it was 1.7 ms for an unknown id against 37 ms for a wrong secret).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache

from psycopg_pool import ConnectionPool

from . import keys

CACHE_TTL_S = 5.0
CACHE_SIZE = 1024
# last_used_at is written at most this often per key and process (and the SQL refuses more
# than once a minute across processes).
TOUCH_INTERVAL_S = 60.0


def key_id_of(token: str) -> str:
    """The id part of a presented key (what precedes the first dot), bounded in length, to
    count failures by; never the secret."""
    return token.strip().partition(".")[0][:64]


@cache
def dummy_hash() -> str:
    """A hash to verify against when there is no real one: made once per process, with the
    parameters of real hashes, so that verifying against it costs what verifying a key does."""
    return keys.hash_secret("not a key")


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
        # One lock per key being checked (single flight), dropped when the check is done.
        self._checking: dict[bytes, threading.Lock] = {}

    def authenticate(self, token: str) -> Principal | None:
        parts = keys.split_token(token)
        if parts is None:
            return None
        fingerprint = hashlib.sha256(token.strip().encode()).digest()
        now = time.monotonic()
        principal = self._fresh(fingerprint, now)
        if principal is None:
            with self._lock:
                check = self._checking.setdefault(fingerprint, threading.Lock())
            with check:
                # Another thread may have checked it while this one waited.
                principal = self._fresh(fingerprint, time.monotonic())
                if principal is None:
                    principal = self._check(fingerprint, *parts)
            with self._lock:
                self._checking.pop(fingerprint, None)
            if principal is None:
                return None
        self._touch(principal.key_id, now)
        return principal

    def cached(self, token: str) -> Principal | None:
        """The caller when its key was checked recently and nothing is due (no I/O at all), so
        the event loop can answer it without a thread; None: call :meth:`authenticate`."""
        fingerprint = hashlib.sha256(token.strip().encode()).digest()
        now = time.monotonic()
        principal = self._fresh(fingerprint, now)
        if principal is None:
            return None
        with self._lock:
            due = now - self._touched.get(principal.key_id, -TOUCH_INTERVAL_S) >= TOUCH_INTERVAL_S
        return None if due else principal

    def proven(self, token: str) -> bool:
        """Whether this exact key was verified by this process and is still remembered (its
        entry maybe due for a re-check): re-checking it costs no scrypt and proves nothing new
        to a guesser, so the failure limiter lets it through (a guesser hammering a key id
        does not lock out the key's holder)."""
        fingerprint = hashlib.sha256(token.strip().encode()).digest()
        with self._lock:
            return fingerprint in self._cache

    def _fresh(self, fingerprint: bytes, now: float) -> Principal | None:
        with self._lock:
            entry = self._cache.get(fingerprint)
            if entry is None or entry.expires <= now:
                return None
            self._cache.move_to_end(fingerprint)
            return entry.principal

    def _check(self, fingerprint: bytes, key_id: str, secret: str) -> Principal | None:
        with self._lock:
            known = self._cache.get(fingerprint)
        if known is not None:
            principal = self._still_valid(known.principal)
        else:
            principal = self._verify(key_id, secret)
        with self._lock:
            if principal is None:
                self._cache.pop(fingerprint, None)
                return None
            self._cache[fingerprint] = _Entry(principal, time.monotonic() + self._ttl)
            self._cache.move_to_end(fingerprint)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return principal

    def _still_valid(self, principal: Principal) -> Principal | None:
        """A key whose secret was verified before: is it still there, unrevoked, and which role?"""
        with self._pool.connection() as conn:
            stored = keys.find_key(conn, principal.key_id)
        if stored is None or stored.revoked:
            return None
        return Principal(stored.id, stored.name, stored.role)

    def _verify(self, key_id: str, secret: str) -> Principal | None:
        with self._pool.connection() as conn:
            stored = keys.find_key(conn, key_id)
        matches = keys.verify_secret(secret, stored.secret_hash if stored else dummy_hash())
        if stored is None or stored.revoked or not matches:
            return None
        return Principal(stored.id, stored.name, stored.role)

    def still_valid(self, principal: Principal) -> bool:
        """Whether the key is still there and unrevoked, asked of the database now (an open
        stream's periodic re-check); its cached entries are dropped when it is not."""
        if self._still_valid(principal) is not None:
            return True
        with self._lock:
            for fingerprint in [
                f for f, e in self._cache.items() if e.principal.key_id == principal.key_id
            ]:
                del self._cache[fingerprint]
        return False

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
