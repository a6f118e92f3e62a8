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
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in network for network in self.allowed):
            return None
        if ip.is_global and not ip.is_multicast:
            return None
        return f"{ip} is {_category(ip)}"


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


def connect(policy: EgressPolicy, host: str, port: int, timeout_s: float) -> socket.socket:
    """A TCP connection to ``host``:``port`` at an address the policy permits, or
    :class:`DeliveryFailed` saying which addresses were refused and why."""
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
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout_s)
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
