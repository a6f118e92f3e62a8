"""The runner against a real broker: what a subscriber receives is what the runner reports."""

from __future__ import annotations

import uuid
from pathlib import Path

from gateway.publisher import PublisherOptions
from gateway.senml import decode
from simulators.city import build_manifest, small_city
from simulators.runner import PublisherSink, Simulation, run
from tests.fixtures.broker import BrokerUnderTest, MqttConnect
from tests.simulators.conftest import WEDNESDAY


def test_a_few_simulated_minutes_arrive_whole(
    mqtt_broker: BrokerUnderTest, mqtt_connect: MqttConnect, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    manifest = build_manifest(small_city(gateway_prefix=prefix), seed=5)
    subscriber = mqtt_connect(mqtt_broker, subscribe="ssc/v1/+/up")

    def options(gateway_id: str) -> PublisherOptions:
        return PublisherOptions(
            gateway_id=gateway_id,
            host=mqtt_broker.host,
            port=mqtt_broker.port,
            backoff_initial=0.05,
            backoff_max=0.5,
            goodbye_timeout=2.0,
            receipts=False,  # a bare broker: no platform sends receipts
        )

    sink = PublisherSink(tmp_path, options)
    try:
        # Five minutes, one pack per sensor per minute, as fast as the broker takes them.
        stats = run(Simulation(manifest, seed=5), sink, WEDNESDAY, WEDNESDAY + 300, batch_s=60)
        assert sink.drain(timeout=30)
    finally:
        sink.close()
    assert stats.packs > 200

    def ours() -> list[bytes]:
        return [
            m.payload for m in subscriber.messages if m.topic.split("/")[2].startswith(prefix + "-")
        ]

    with subscriber.arrived:
        subscriber.arrived.wait_for(lambda: len(ours()) >= stats.packs, timeout=20)
    subscriber.wait_for(len(subscriber.messages) + 1, timeout=0.5)  # room for a double to show
    received = ours()
    assert len(received) == stats.packs
    assert sum(len(decode(payload, 0.0)) for payload in received) == stats.records
