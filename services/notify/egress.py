"""Which addresses a webhook may reach, and a connection that keeps to them.

A webhook's URL comes from whoever may manage subscriptions, and the notifier runs inside the
city's network, next to its database, broker and cloud metadata service. Left alone, a URL such
as ``http://169.254.169.254/`` or ``http://timescaledb:5432/`` would make the notifier probe
them (server-side request forgery). So a webhook reaches only globally routable addresses,
plus the networks the city allows (``URBANPULSE_WEBHOOK_ALLOW_NETWORKS``, e.g. its ticketing
system's subnet).

The check is made on the address actually connected to, not on a name resolved beforehand:
the name is resolved once, each address is judged, and the socket is opened to a permitted one,
so a name that resolves differently a second time (DNS rebinding) gains nothing. Redirects are
never followed (a 3xx is a failed delivery), so a permitted server cannot point elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import DeliveryFailed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Global addresses, and ``allowed`` networks besides (loopback, private, link-local...)."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str | Network]) -> EgressPolicy:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        given: Address = ipaddress.ip_address(address.split("%", 1)[0])
        # An IPv6 address that carries an IPv4 one reaches it (::ffff:127.0.0.1 is 127.0.0.1; a
        # NAT64 gateway takes 64:ff9b::a9fe:a9fe to 169.254.169.254): judged as that address.
        ip = _carried_ipv4(given) if isinstance(given, ipaddress.IPv6Address) else given
        if any(a in network for network in self.allowed for a in (given, ip)):
            return None
        if ip.is_global and not ip.is_multicast:
            return None
        shown = str(given) if ip == given else f"{given} ({ip})"
        return f"{shown} is {_category(ip)}"


# IPv6 prefixes whose last 32 bits are an IPv4 address the packet ends up at: NAT64's well-known
# and local-use prefixes (RFC 6052, 8215), IPv4-compatible (deprecated) and IPv4-translated.
_CARRYING_IPV4 = tuple(
    ipaddress.IPv6Network(prefix)
    for prefix in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")
)


def _carried_ipv4(ip: ipaddress.IPv6Address) -> Address:
    """The IPv4 address ``ip`` leads to, if it carries one, else ``ip``."""
    if ip.is_loopback or ip.is_unspecified:  # ::1 and :: are in ::/96 but are themselves
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # 2002:AABB:CCDD::/48 is 6to4 for AA.BB.CC.DD
        return ip.sixtofour
    if ip.teredo is not None:  # (server, client)
        return ip.teredo[1]
    if any(ip in prefix for prefix in _CARRYING_IPV4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _category(ip: Address) -> str:
    for name, flag in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a private address", ip.is_private),
        ("a multicast address", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
    ):
        if flag:
            return name
    return "not a global address"


def connect(
    policy: EgressPolicy, host: str, port: int, timeout_s: float, *, deadline: float
) -> socket.socket:
    """A TCP connection to ``host``:``port`` at an address the policy permits, tried in turn
    until ``deadline`` (``time.monotonic()``), or :class:`DeliveryFailed` saying which
    addresses were refused and why. (Name resolution itself is the system resolver's, bounded
    by its own timeouts.)"""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryFailed(f"{host} unreachable: {exc}") from None
    refused: list[str] = []
    last_error: OSError | None = None
    for family, kind, proto, _name, sockaddr in infos:
        reason = policy.refusal(str(sockaddr[0]))
        if reason is not None:
            refused.append(reason)
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeliveryFailed(f"{host}:{port} did not answer within {timeout_s:g} s")
        sock = socket.socket(family, kind, proto)
        sock.settimeout(min(timeout_s, left))
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    if last_error is not None:
        raise DeliveryFailed(f"{host}:{port} unreachable: {last_error}")
    raise DeliveryFailed(
        f"{host} is not reachable by webhooks: {'; '.join(dict.fromkeys(refused))} "
        "(allow its network with URBANPULSE_WEBHOOK_ALLOW_NETWORKS)"
    )
