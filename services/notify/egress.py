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
The resolution is under the delivery's deadline too: a DNS server that does not answer fails
the delivery at the deadline (retried as any failure) rather than holding the notifier.

A subscription's URL that names an address outright (``http://10.0.0.5/``) is judged by the
same policy when it is created (:meth:`EgressPolicy.host_refusal`), so the mistake is told to
whoever makes it rather than found later in a dead letter.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DeliveryFailed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# getaddrinfo's answer: (family, type, proto, canonname, sockaddr); sockaddr[0] is the address.
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]
# How a host name becomes addresses: (host, port) -> getaddrinfo's answer. The system resolver
# by default; a parameter so the deadline can be shown with a resolver that is slow on purpose.
Resolver = Callable[[str, int], Sequence[AddrInfo]]
# What a refusal tells the person who can change it.
ALLOW_HINT = "allow its network with URBANPULSE_WEBHOOK_ALLOW_NETWORKS"


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

    def host_refusal(self, host: str) -> str | None:
        """Why a URL whose host is ``host`` may not be reached, when ``host`` is an address;
        None when it may, or when it is a name (which only delivery resolves and judges)."""
        address = literal_address(host)
        return None if address is None else self.refusal(address)


# The legacy IPv4 spellings the system resolver reads as addresses without asking DNS (127.1,
# 0x7f.0.0.1, 2130706433, 017700000001): digits, hex digits, x and dots only.
_LEGACY_IPV4 = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)


def literal_address(host: str) -> str | None:
    """The address ``host`` (a URL's host, brackets removed) spells, or None for a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _LEGACY_IPV4.fullmatch(host):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))  # parses, never resolves
    except OSError:
        return None


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


def system_resolver(host: str, port: int) -> Sequence[AddrInfo]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


# getaddrinfo takes no timeout and cannot be interrupted, so it runs in a thread of its own that
# the delivery waits for until its deadline; one still running then is abandoned (it ends with
# the system resolver's own timeouts, its answer dropped). At most this many run at once, so a
# DNS server that never answers cannot pile up threads: beyond them a delivery waits its turn,
# still within its deadline.
_LOOKUPS = threading.BoundedSemaphore(4)


def resolve(
    host: str, port: int, timeout_s: float, *, deadline: float, resolver: Resolver = system_resolver
) -> Sequence[AddrInfo]:
    """``resolver``'s answer for ``host``:``port`` if it comes before ``deadline``
    (``time.monotonic()``), else :class:`DeliveryFailed`."""
    if literal_address(host) is not None:
        # An address: getaddrinfo only parses it, so it needs neither a thread nor a slot
        # (four lookups stuck on a dead name must not hold up receivers named by address).
        try:
            return resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise DeliveryFailed(f"{host} unreachable: {exc}") from None
    late = DeliveryFailed(f"{host} did not resolve within {timeout_s:g} s")
    if not _LOOKUPS.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise late
    outcome: list[Sequence[AddrInfo] | Exception] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(resolver(host, port))
        except Exception as exc:  # handed to the waiting delivery, raised there
            outcome.append(exc)
        finally:
            _LOOKUPS.release()
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise late
    answer = outcome[0]
    # UnicodeError: a name IDNA cannot encode (a label over 63 characters), as unresolvable.
    if isinstance(answer, OSError | UnicodeError):
        raise DeliveryFailed(f"{host} unreachable: {answer}") from None
    if isinstance(answer, Exception):
        raise answer
    return answer


def connect(
    policy: EgressPolicy,
    host: str,
    port: int,
    timeout_s: float,
    *,
    deadline: float,
    resolver: Resolver = system_resolver,
) -> socket.socket:
    """A TCP connection to ``host``:``port`` at an address the policy permits, resolved and
    then tried in turn until ``deadline`` (``time.monotonic()``), or :class:`DeliveryFailed`
    saying which addresses were refused and why."""
    infos = resolve(host, port, timeout_s, deadline=deadline, resolver=resolver)
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
        f"{host} is not reachable by webhooks: {'; '.join(dict.fromkeys(refused))} ({ALLOW_HINT})"
    )
