"""Webhooks keep to global addresses and the allowed networks: the policy alone, then the
notifier against real receivers on loopback (refused unless allowed, never redirected)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from services.notify import egress, manage
from services.notify.egress import EgressPolicy
from services.notify.errors import DeliveryFailed
from services.notify.model import check_subscription
from services.settings import SettingsError, load_settings
from services.storage import notifications as store
from tests.fixtures.pki import make_pki

from .conftest import LOOPBACK, Clock, Conn, notifier, raise_alert
from .test_delivery import webhook

REFUSED = {
    "127.0.0.1": "a loopback address",
    "::1": "a loopback address",
    "::ffff:127.0.0.1": "a loopback address",  # IPv4-mapped: judged as the IPv4 address
    "10.1.2.3": "a private address",
    "192.168.0.10": "a private address",
    "169.254.169.254": "a link-local address",  # cloud metadata services
    "fe80::1%eth0": "a link-local address",
    "0.0.0.0": "a private address",
    "100.64.0.1": "not a global address",  # carrier-grade NAT
    "224.0.0.1": "a multicast address",
    # IPv6 forms that carry an IPv4 address, judged as that address (review finding):
    "64:ff9b::a9fe:a9fe": "a link-local address",  # NAT64 to 169.254.169.254
    "64:ff9b:1::a00:1": "a private address",  # NAT64 local-use prefix, to 10.0.0.1
    "2002:7f00:1::": "a loopback address",  # 6to4 of 127.0.0.1
    "::7f00:1": "a loopback address",  # IPv4-compatible 127.0.0.1
    "::ffff:0:a00:1": "a private address",  # IPv4-translated 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": "a private address",  # Teredo, client 10.0.0.1
}


@pytest.mark.parametrize(("address", "category"), REFUSED.items())
def test_the_default_policy_refuses_every_non_global_address(address: str, category: str) -> None:
    reason = EgressPolicy().refusal(address)
    assert reason is not None
    assert reason.endswith(f"is {category}")


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2001:4860:4860::8888", "192.0.43.10", "64:ff9b::808:808"]
)
def test_global_addresses_are_reachable(address: str) -> None:
    assert EgressPolicy().refusal(address) is None


def test_allowed_networks_admit_their_addresses_only() -> None:
    policy = EgressPolicy.allowing(["10.20.0.0/16", "::1/128"])
    assert policy.refusal("10.20.9.9") is None
    assert policy.refusal("::1") is None
    assert policy.refusal("10.21.0.1") == "10.21.0.1 is a private address"
    assert policy.refusal("127.0.0.1") == "127.0.0.1 is a loopback address"


def test_the_setting_reads_comma_separated_networks_and_names_a_bad_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("URBANPULSE_WEBHOOK_ALLOW_NETWORKS", "10.20.0.0/16, 2001:db8::/32")
    assert [str(n) for n in load_settings().webhook_allow_networks] == [
        "10.20.0.0/16",
        "2001:db8::/32",
    ]
    monkeypatch.setenv("URBANPULSE_WEBHOOK_ALLOW_NETWORKS", "10.20.0.1/16")
    with pytest.raises(SettingsError, match=r"URBANPULSE_WEBHOOK_ALLOW_NETWORKS.*host bits set"):
        load_settings()


def test_a_webhook_to_loopback_is_refused_by_default_and_nothing_is_sent(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    webhook(conn, receiver)
    alert = raise_alert(conn)

    result = notifier(conn, clock, egress=EgressPolicy()).run_once()

    assert (result.sent, result.failed) == (0, 1)
    assert receiver.requests == []
    [row] = store.notifications_of(conn, alert.id)
    assert row["last_error"] == (
        "127.0.0.1 is not reachable by webhooks: 127.0.0.1 is a loopback address "
        "(allow its network with URBANPULSE_WEBHOOK_ALLOW_NETWORKS)"
    )


def test_a_name_is_judged_by_the_addresses_it_resolves_to(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    receiver.url = receiver.url.replace("127.0.0.1", "localhost")
    webhook(conn, receiver)
    alert = raise_alert(conn)

    assert notifier(conn, clock, egress=EgressPolicy()).run_once().failed == 1
    assert receiver.requests == []
    [row] = store.notifications_of(conn, alert.id)
    assert row["last_error"].startswith("localhost is not reachable by webhooks: ")
    assert "is a loopback address" in row["last_error"]

    # Allowed, the same subscription delivers (once the retry is due).
    clock.advance(30)
    loopback = EgressPolicy.allowing(["127.0.0.0/8", "::1/128"])
    assert notifier(conn, clock, egress=loopback).run_once().sent == 1
    assert [r.verified for r in receiver.requests] == [True]


def test_a_redirect_is_a_failure_never_followed(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    elsewhere = receiver_factory()
    receiver = receiver_factory()
    receiver.redirect_to = elsewhere.url
    webhook(conn, receiver)
    alert = raise_alert(conn)

    assert notifier(conn, clock).run_once().failed == 1  # loopback allowed (conftest.CONFIG)

    assert len(receiver.requests) == 1
    assert elsewhere.requests == []
    [row] = store.notifications_of(conn, alert.id)
    assert row["last_error"] == f"HTTP 307 from {receiver.url}"


def test_https_checks_the_receivers_certificate_for_its_name(
    conn: Conn,
    clock: Clock,
    receiver_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki = make_pki(tmp_path)
    receiver = receiver_factory(tls=pki)
    webhook(conn, receiver)
    alert = raise_alert(conn)

    assert notifier(conn, clock).run_once().failed == 1  # its CA is not trusted
    [row] = store.notifications_of(conn, alert.id)
    assert "CERTIFICATE_VERIFY_FAILED" in row["last_error"]
    assert receiver.requests == []

    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca.crt"]))  # OpenSSL's trust store, per call
    clock.advance(30)
    assert notifier(conn, clock).run_once().sent == 1
    assert [r.verified for r in receiver.requests] == [True]


def test_a_receiver_that_drips_its_answer_is_cut_at_the_delivery_deadline(
    conn: Conn, clock: Clock
) -> None:
    # A raw TCP receiver sending its headers a byte at a time, each well inside the socket's
    # timeout: only a deadline on the whole delivery ends it (review finding).
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        client, _ = server.accept()
        with client:
            client.recv(65536)
            client.sendall(b"HTTP/1.1 204 No Content\r\n")
            for byte in b"X-Slow: yes\r\n" * 100:
                if stop.wait(0.1):
                    return
                with contextlib.suppress(OSError):
                    client.sendall(bytes([byte]))

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        manage.add_subscription(
            conn, {"name": "slow", "channel": "webhook", "target": url}, egress=LOOPBACK
        )
        alert = raise_alert(conn)
        assert notifier(conn, clock, timeout_s=1).run_once().failed == 1
        [row] = store.notifications_of(conn, alert.id)
        assert row["last_error"] == f"{url} did not answer within 1 s"
    finally:
        stop.set()
        thread.join(5)
        server.close()


class HeldResolver:
    """A resolver that answers as the system resolver does for 127.0.0.1, but only once
    ``release`` is set (or, as a bound, after 30 s). A pure seam handed to the notifier, not a
    mock of a library: the system resolver cannot be pointed at a test DNS server, and no DNS
    server library (dnslib) is installed to write one."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> Any:
        self.asked.append(host)
        self.release.wait(30)
        return socket.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM)


def test_a_dns_answer_later_than_the_deadline_fails_the_delivery_which_is_retried(
    conn: Conn, clock: Clock, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    receiver.url = receiver.url.replace("127.0.0.1", "slow-dns.test")
    webhook(conn, receiver)
    alert = raise_alert(conn)
    resolver = HeldResolver()
    try:
        # Before, getaddrinfo ran outside the deadline: this pass waited for the answer and sent.
        result = notifier(conn, clock, timeout_s=1, resolver=resolver).run_once()
        assert (result.sent, result.failed) == (0, 1)
        assert resolver.asked == ["slow-dns.test"]
        assert receiver.requests == []
        [row] = store.notifications_of(conn, alert.id)
        assert row["last_error"] == "slow-dns.test did not resolve within 1 s"
        assert row["status"] == "pending"

        resolver.release.set()  # DNS answers again: the retry, once due, delivers
        clock.advance(30)
        assert notifier(conn, clock, resolver=resolver).run_once().sent == 1
        assert [r.verified for r in receiver.requests] == [True]
    finally:
        resolver.release.set()


def test_lookups_outliving_their_deadline_are_bounded_and_give_their_place_back() -> None:
    # Each abandoned lookup keeps a thread until DNS answers: past a few, a delivery waits for
    # a place (within its deadline) instead of starting one more.
    resolver = HeldResolver()
    try:
        for _ in range(6):
            with pytest.raises(
                DeliveryFailed, match=r"^stuck\.test did not resolve within 0\.2 s$"
            ):
                egress.resolve(
                    "stuck.test", 80, 0.2, deadline=time.monotonic() + 0.2, resolver=resolver
                )
        assert len(resolver.asked) == 4
    finally:
        resolver.release.set()
    answer = egress.resolve("stuck.test", 80, 10, deadline=time.monotonic() + 10, resolver=resolver)
    assert {info[4][0] for info in answer} == {"127.0.0.1"}


def test_an_address_is_answered_while_every_lookup_place_is_held() -> None:
    # A receiver named by address needs no DNS: four lookups stuck on a dead name must not
    # fail it (before, it waited for a place and failed "did not resolve").
    resolver = HeldResolver()
    try:
        for _ in range(4):
            with pytest.raises(DeliveryFailed):
                egress.resolve(
                    "stuck.test", 80, 0.2, deadline=time.monotonic() + 0.2, resolver=resolver
                )
        answer = egress.resolve(
            "192.0.2.7", 80, 0.2, deadline=time.monotonic() + 0.2, resolver=egress.system_resolver
        )
        assert {info[4][0] for info in answer} == {"192.0.2.7"}
    finally:
        resolver.release.set()


def test_a_stored_url_with_a_port_out_of_range_fails_its_delivery_not_the_notifier(
    conn: Conn, clock: Clock
) -> None:
    # Made before creation checked ports: stored as it was then, past today's check.
    columns = check_subscription({"name": "old", "channel": "webhook", "target": "http://a.test/"})
    store.add_subscription(conn, {**columns, "target": "http://127.0.0.1:99999/h"})
    alert = raise_alert(conn)

    assert notifier(conn, clock).run_once().failed == 1  # it used to raise ValueError
    [row] = store.notifications_of(conn, alert.id)
    assert row["last_error"] == "http://127.0.0.1:99999/h: the port is not 1 to 65535"
