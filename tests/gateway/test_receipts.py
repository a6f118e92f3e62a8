"""Pack identity and receipts on the gateway's side: the codec, and the fallback to PUBACK
against a real broker with no platform behind it (an older platform sends no receipts)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import pytest

from gateway.outbox import Outbox
from gateway.publisher import Publisher, PublisherOptions, _receipted
from gateway.receipts import (
    PackId,
    Receipt,
    ReceiptError,
    decode_receipt,
    encode_receipt,
    pack_id,
    ranges,
)
from gateway.topics import down_topic, up_topic
from tests.fixtures.broker import BrokerUnderTest, MqttConnect


@pytest.mark.parametrize(
    ("seqs", "expected"),
    [
        ([], ()),
        ([5], ((5, 5),)),
        ([3, 1, 2, 2], ((1, 3),)),
        ([1, 2, 4, 7, 8], ((1, 2), (4, 4), (7, 8))),
    ],
    ids=["none", "one", "unsorted-duplicates", "gaps"],
)
def test_ranges(seqs: list[int], expected: tuple[tuple[int, int], ...]) -> None:
    assert ranges(seqs) == expected


def test_receipt_round_trip() -> None:
    payload = encode_receipt("abc", [4, 1, 2])
    assert payload == b'{"type":"receipt","stream":"abc","ranges":[[1,2],[4,4]]}'
    receipt = decode_receipt(payload)
    assert receipt == Receipt("abc", ((1, 2), (4, 4)))
    assert 2 in receipt
    assert 3 not in receipt


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"nope", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type":"receipt","ranges":[]}', "a receipt needs"),
        (b'{"type":"receipt","stream":"s","ranges":[[3,1]]}', "a range must be"),
        (b'{"type":"receipt","stream":"s","ranges":[[0,1]]}', "a range must be"),
        (b'{"type":"receipt","stream":"s","ranges":[[1,true]]}', "a range must be"),
    ],
    ids=["not-json", "array", "no-stream", "reversed", "zero", "bool"],
)
def test_malformed_receipts_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(ReceiptError, match=reason):
        decode_receipt(payload)


def test_other_down_messages_are_not_receipts() -> None:
    assert decode_receipt(b'{"type":"reboot"}') is None


def test_pack_identity_from_user_properties() -> None:
    identity = PackId("s", 9, 3)
    assert identity.properties() == [("pack", "s:9:3")]
    assert pack_id(identity.properties()) == identity
    assert pack_id([("pack", "a:b:9:3")]) == PackId("a:b", 9, 3)
    assert pack_id(None) is None
    assert pack_id([("other", "x")]) is None
    for malformed in ("s:9", "s:x:3", "s:9:-1", "s:9:", "s:٣:1"):
        with pytest.raises(ReceiptError, match="integers"):
            pack_id([("pack", malformed)])
    with pytest.raises(ReceiptError, match="stream must be"):
        pack_id([("pack", ":9:3")])
    with pytest.raises(ReceiptError, match="oldest <= seq"):
        pack_id([("pack", "s:1:2")])


def test_the_first_gateways_three_properties_are_still_understood() -> None:
    assert pack_id([("seq", "9"), ("stream", "s"), ("oldest", "3")]) == PackId("s", 9, 3)
    assert pack_id([("seq", "9"), ("stream", "s")]) == PackId("s", 9, 0)
    with pytest.raises(ReceiptError, match="integers"):
        pack_id([("seq", "x"), ("stream", "s")])
    with pytest.raises(ReceiptError, match="stream"):
        pack_id([("seq", "1")])
    with pytest.raises(ReceiptError, match="oldest <= seq"):
        pack_id([("seq", "1"), ("stream", "s"), ("oldest", "2")])


def test_the_outbox_keeps_its_stream_id_and_a_new_file_gets_another(tmp_path: Path) -> None:
    with Outbox(tmp_path / "a.sqlite") as outbox:
        first = outbox.stream
        outbox.put("t", b"x")
        outbox.put("t", b"y")
        assert outbox.first_seq() == 1
        assert outbox.delete_range(1, 5) == 2
        assert outbox.first_seq() == 3  # empty: the next seq
    with Outbox(tmp_path / "a.sqlite") as outbox:
        assert outbox.stream == first
    with Outbox(tmp_path / "b.sqlite") as outbox:
        assert outbox.stream != first


def test_packs_carry_their_identity_and_a_gateway_without_receipts_falls_back_to_puback(
    tmp_path: Path,
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway_id = f"gw-{uuid.uuid4().hex[:12]}"
    subscriber = mqtt_connect(mqtt_broker, subscribe=up_topic(gateway_id))
    outbox = Outbox(tmp_path / "outbox.sqlite")
    publisher = Publisher(
        outbox,
        PublisherOptions(
            gateway_id=gateway_id,
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            receipt_timeout=60.0,
            receipt_fallback=1.0,
        ),
    )
    publisher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.publisher"):
            for n in range(3):
                publisher.put(f'[{{"n":"s{n}/flow","v":1,"t":1750000000}}]'.encode())
            assert publisher.wait_until(lambda h: h.acknowledged >= 3, 10)
            assert publisher.health().outbox_depth == 3  # a PUBACK is not a receipt
            assert publisher.wait_until(lambda h: h.outbox_depth == 0, 10)
        assert publisher.health().receipt_mode == "puback"
        assert any("not to send receipts" in r.getMessage() for r in caplog.records)
        messages = subscriber.wait_for(3)
        identities = [pack_id(getattr(m.properties, "UserProperty", None)) for m in messages]
        assert [i.seq for i in identities if i] == [1, 2, 3]
        assert {i.stream for i in identities if i} == {outbox.stream}
        publisher.put(b'[{"n":"s9/flow","v":1,"t":1750000000}]')
        assert publisher.wait_until(lambda h: h.outbox_depth == 0, 10)  # on PUBACK now
    finally:
        publisher.stop()
        outbox.close()


def test_resends_back_off_while_no_receipt_comes_and_a_receipt_restarts_them(
    tmp_path: Path, mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect
) -> None:
    # No platform behind the broker: the pack is acknowledged and never receipted. A fallback
    # far away keeps the publisher waiting for receipts (resending) throughout.
    gateway_id = f"gw-{uuid.uuid4().hex[:12]}"
    platform = mqtt_connect(mqtt_broker)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    publisher = Publisher(
        outbox,
        PublisherOptions(
            gateway_id=gateway_id,
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            receipt_timeout=0.1,
            receipt_fallback=600.0,
        ),
    )
    stop_kicking = threading.Event()

    def kick() -> None:
        # Pump every 10 ms rather than at the 1 s poll, so resends go out when they fall due.
        while not stop_kicking.wait(0.01):
            publisher.kick()

    kicker = threading.Thread(target=kick, daemon=True)
    publisher.start()
    kicker.start()
    try:
        publisher.put(b'[{"n":"s1/flow","v":1,"t":1750000000}]')
        assert publisher.wait_until(lambda h: h.acknowledged >= 1, 10)
        time.sleep(1.6)
        # Timeouts 0.1, 0.2, 0.4, 0.8 s: at most 4 rounds in 1.6 s (a fixed 0.1 s: about 15).
        resent = publisher.health().resent
        assert 2 <= resent <= 5
        # Right after a round the timeout is 1.6 s or more; a receipt (of a pack long gone)
        # brings it back to 0.1 s, so the pack goes out again at once.
        assert publisher.wait_until(lambda h: h.resent > resent, 5)
        resent = publisher.health().resent
        platform.client.publish(
            down_topic(gateway_id), encode_receipt(outbox.stream, [1000]), qos=1
        ).wait_for_publish(5)
        assert publisher.wait_until(lambda h: h.resent > resent, 1.0)
        assert publisher.health().outbox_depth == 1
    finally:
        stop_kicking.set()
        kicker.join()
        publisher.stop()
        outbox.close()


@pytest.mark.parametrize(
    ("ranges_", "sent", "expected"),
    [
        (((2, 3), (7, 7)), [9, 7, 1, 2, 3, 5, 4], [2, 3, 7]),  # the receipt is the smaller
        (((1, 1_000_000),), [500, 2, 2_000_000], [2, 500]),  # the sent packs are
        (((1, 1), (4, 1_000)), [3, 4, 1], [1, 4]),
    ],
    ids=["few-in-receipt", "few-sent", "gap"],
)
def test_a_receipt_names_the_sent_packs_it_covers(
    ranges_: tuple[tuple[int, int], ...], sent: list[int], expected: list[int]
) -> None:
    assert _receipted(Receipt("s", ranges_), dict.fromkeys(sent, 0.0)) == expected
