"""The webhook signature: HMAC-SHA256 over ``"<timestamp>.<body>"`` with the subscription's secret.

Each delivery carries ``X-UrbanPulse-Signature: t=<unix seconds>,v1=<hex digest>``. A receiver
recomputes ``hmac_sha256(secret, f"{t}.".encode() + raw_body)``, compares it in constant time,
and refuses a ``t`` too far from its clock (a replayed old delivery): :func:`verify` does exactly
that and is what a Python receiver may copy. Signing the timestamp with the body is why an
attacker cannot re-date a captured delivery.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-UrbanPulse-Signature"
DELIVERY_HEADER = "X-UrbanPulse-Delivery"
EVENT_HEADER = "X-UrbanPulse-Event"
# How far a receiver tolerates clocks apart (and a delivery in flight) by default.
TOLERANCE_S = 300


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of now."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(parts.get("v1", ""), _digest(secret, timestamp, body))
