"""The topic scheme ssc/v1/<gateway_id>/<channel>: builders, filters, parser, gateway ids."""

from __future__ import annotations

import pytest

from gateway import topics
from gateway.errors import TopicError, TopicReason, WireError
from gateway.topics import Channel, parse_topic


def test_builders() -> None:
    assert topics.up_topic("gw-0001") == "ssc/v1/gw-0001/up"
    assert topics.status_topic("gw-0001") == "ssc/v1/gw-0001/status"
    assert topics.down_topic("gw_7") == "ssc/v1/gw_7/down"
    assert topics.topic("A", Channel.UP) == "ssc/v1/A/up"


def test_filters() -> None:
    assert topics.UP_FILTER == "ssc/v1/+/up"
    assert topics.STATUS_FILTER == "ssc/v1/+/status"
    assert topics.shared("ingest", topics.UP_FILTER) == "$share/ingest/ssc/v1/+/up"


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_shared_refuses_bad_group(group: str) -> None:
    with pytest.raises(TopicError) as caught:
        topics.shared(group, topics.UP_FILTER)
    assert caught.value.reason == TopicReason.BAD_SHARE_NAME


def test_shared_refuses_empty_filter() -> None:
    with pytest.raises(TopicError) as caught:
        topics.shared("ingest", "")
    assert caught.value.reason == TopicReason.WRONG_LEVELS


PARSED = [
    pytest.param("ssc/v1/gw-0001/up", "gw-0001", Channel.UP, id="up"),
    pytest.param("ssc/v1/gw-0001/status", "gw-0001", Channel.STATUS, id="status"),
    pytest.param("ssc/v1/0/down", "0", Channel.DOWN, id="down-one-char-id"),
    pytest.param("ssc/v1/" + "a" * 64 + "/up", "a" * 64, Channel.UP, id="longest-id"),
]


@pytest.mark.parametrize(("topic", "gateway_id", "channel"), PARSED)
def test_parse(topic: str, gateway_id: str, channel: Channel) -> None:
    parsed_id, parsed_channel = parse_topic(topic)
    assert (parsed_id, parsed_channel) == (gateway_id, channel)
    assert topics.topic(parsed_id, parsed_channel) == topic  # builders and parser agree


REFUSED = [
    pytest.param("", TopicReason.WRONG_LEVELS, id="empty"),
    pytest.param("ssc/v1/gw/up/extra", TopicReason.WRONG_LEVELS, id="five-levels"),
    pytest.param("ssc/v1/gw", TopicReason.WRONG_LEVELS, id="three-levels"),
    pytest.param("/ssc/v1/gw/up", TopicReason.WRONG_LEVELS, id="leading-slash"),
    pytest.param("ssc/v1/gw/up/", TopicReason.WRONG_LEVELS, id="trailing-slash"),
    pytest.param("SSC/v1/gw/up", TopicReason.WRONG_PREFIX, id="prefix-case"),
    pytest.param("$SYS/v1/gw/up", TopicReason.WRONG_PREFIX, id="sys"),
    pytest.param("ssc/v2/gw/up", TopicReason.UNSUPPORTED_VERSION, id="v2"),
    pytest.param("ssc/V1/gw/up", TopicReason.UNSUPPORTED_VERSION, id="version-case"),
    pytest.param("ssc/v1/+/up", TopicReason.BAD_GATEWAY_ID, id="wildcard-plus"),
    pytest.param("ssc/v1/#/up", TopicReason.BAD_GATEWAY_ID, id="wildcard-hash"),
    pytest.param("ssc/v1//up", TopicReason.BAD_GATEWAY_ID, id="empty-id"),
    pytest.param("ssc/v1/-gw/up", TopicReason.BAD_GATEWAY_ID, id="id-starts-dash"),
    pytest.param("ssc/v1/g w/up", TopicReason.BAD_GATEWAY_ID, id="id-space"),
    pytest.param("ssc/v1/gw\u00e9/up", TopicReason.BAD_GATEWAY_ID, id="id-non-ascii"),
    pytest.param("ssc/v1/" + "a" * 65 + "/up", TopicReason.BAD_GATEWAY_ID, id="id-too-long"),
    pytest.param("ssc/v1/gw/UP", TopicReason.UNKNOWN_CHANNEL, id="channel-case"),
    pytest.param("ssc/v1/gw/sideways", TopicReason.UNKNOWN_CHANNEL, id="unknown-channel"),
    pytest.param("ssc/v1/gw/", TopicReason.UNKNOWN_CHANNEL, id="empty-channel"),
]


@pytest.mark.parametrize(("topic", "reason"), REFUSED)
def test_parse_refuses(topic: str, reason: TopicReason) -> None:
    with pytest.raises(TopicError) as caught:
        parse_topic(topic)
    assert caught.value.reason == reason
    assert caught.value.topic == topic
    assert isinstance(caught.value, WireError)
    assert str(caught.value).startswith(f"{reason.value}: ")


@pytest.mark.parametrize("gateway_id", ["", "+", "#", "a/b", "-a", "_a", "a" * 65, "a\n", "a.b"])
def test_builders_refuse_bad_gateway_ids(gateway_id: str) -> None:
    assert not topics.is_valid_gateway_id(gateway_id)
    for build in (topics.up_topic, topics.status_topic, topics.down_topic):
        with pytest.raises(TopicError) as caught:
            build(gateway_id)
        assert caught.value.reason == TopicReason.BAD_GATEWAY_ID


@pytest.mark.parametrize("gateway_id", ["a", "A9", "gw-0001", "gw_0001", "9" * 64])
def test_valid_gateway_ids(gateway_id: str) -> None:
    assert topics.check_gateway_id(gateway_id) == gateway_id
