"""The MQTT topic scheme of the wire contract, in one place.

``ssc/v1/<gateway_id>/up`` carries readings (SenML packs), ``ssc/v1/<gateway_id>/status`` the
retained online/offline state (the offline message is the MQTT last will) and
``ssc/v1/<gateway_id>/down`` commands to the gateway. The gateway id is a level of its own so
that the broker's ACL can say "this gateway may publish only under its own name"; it is
therefore restricted to characters that are never MQTT wildcards or level separators.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from gateway.errors import TopicError, TopicReason

PREFIX = "ssc"
VERSION = "v1"


class Channel(enum.StrEnum):
    """The last topic level: what flows on the topic."""

    UP = "up"
    STATUS = "status"
    DOWN = "down"


# Letters, digits, '_' and '-': never '+', '#' or '/', which MQTT reserves (MQTT 5 §4.7), and
# nothing a broker ACL pattern would have to escape. 64 characters are plenty for an id and keep
# a topic well inside any broker's limits.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# MQTT 5 §4.8.2: a ShareName must not contain '/', '+' or '#'.
_SHARE_NAME_FORBIDDEN = frozenset("/+#")

UP_FILTER = f"{PREFIX}/{VERSION}/+/{Channel.UP}"
"""Subscription filter for every gateway's readings."""
STATUS_FILTER = f"{PREFIX}/{VERSION}/+/{Channel.STATUS}"
"""Subscription filter for every gateway's online/offline state."""


class ParsedTopic(NamedTuple):
    """A topic of the scheme, split; unpacks as ``gateway_id, channel``."""

    gateway_id: str
    channel: Channel


def is_valid_gateway_id(gateway_id: str) -> bool:
    """Return whether ``gateway_id`` may name a gateway in a topic."""
    return _GATEWAY_ID.fullmatch(gateway_id) is not None


def check_gateway_id(gateway_id: str) -> str:
    """Return ``gateway_id`` unchanged, or raise :class:`TopicError` if it may not be used."""
    if not is_valid_gateway_id(gateway_id):
        raise TopicError(
            TopicReason.BAD_GATEWAY_ID,
            gateway_id,
            f"gateway id {gateway_id!r} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}",
        )
    return gateway_id


def topic(gateway_id: str, channel: Channel) -> str:
    """Return the topic of ``channel`` for ``gateway_id``."""
    return f"{PREFIX}/{VERSION}/{check_gateway_id(gateway_id)}/{channel.value}"


def up_topic(gateway_id: str) -> str:
    """Where ``gateway_id`` publishes readings."""
    return topic(gateway_id, Channel.UP)


def status_topic(gateway_id: str) -> str:
    """Where ``gateway_id`` publishes its retained online/offline state and last will."""
    return topic(gateway_id, Channel.STATUS)


def down_topic(gateway_id: str) -> str:
    """Where commands to ``gateway_id`` are published."""
    return topic(gateway_id, Channel.DOWN)


def shared(group: str, topic_filter: str) -> str:
    """Return the shared subscription ``$share/<group>/<filter>`` (MQTT 5 §4.8.2).

    Ingestion workers subscribe with the same group so the broker hands each message to one.
    """
    if not group or not _SHARE_NAME_FORBIDDEN.isdisjoint(group):
        raise TopicError(
            TopicReason.BAD_SHARE_NAME,
            group,
            f"share group {group!r} must be non-empty without '/', '+' or '#'",
        )
    if not topic_filter:
        raise TopicError(TopicReason.WRONG_LEVELS, topic_filter, "the filter is empty")
    return f"$share/{group}/{topic_filter}"


def parse_topic(topic: str) -> ParsedTopic:
    """Split a topic of the scheme into gateway id and channel; raise :class:`TopicError`."""
    levels = topic.split("/")
    if len(levels) != 4:
        raise TopicError(
            TopicReason.WRONG_LEVELS,
            topic,
            f"expected {PREFIX}/{VERSION}/<gateway_id>/<channel>, got {len(levels)} levels",
        )
    prefix, version, gateway_id, channel = levels
    if prefix != PREFIX:
        raise TopicError(TopicReason.WRONG_PREFIX, topic, f"first level must be {PREFIX!r}")
    if version != VERSION:
        raise TopicError(
            TopicReason.UNSUPPORTED_VERSION, topic, f"topic version {version!r} is not {VERSION}"
        )
    if not is_valid_gateway_id(gateway_id):
        raise TopicError(
            TopicReason.BAD_GATEWAY_ID, topic, f"gateway id {gateway_id!r} is not valid"
        )
    try:
        parsed_channel = Channel(channel)
    except ValueError:
        raise TopicError(
            TopicReason.UNKNOWN_CHANNEL,
            topic,
            f"channel {channel!r} is not one of {', '.join(c.value for c in Channel)}",
        ) from None
    return ParsedTopic(gateway_id, parsed_channel)
