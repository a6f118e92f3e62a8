"""Errors of the gateway package, and of the wire contract: what a sender got wrong in a SenML
pack or an MQTT topic.

:class:`GatewayError` is the base of every error the package raises. Under it, two families, as
h11 splits remote from local errors: :class:`WireError`, what the other side sent wrong (the
SenML codec, topics), so an ingestion loop can catch everything the wire contract refuses in one
``except`` and turn it into a quarantine row; and the gateway's own trouble, declared beside the
code that raises it (``outbox.OutboxError``, ``drivers.DriverError``, ``receipts.ReceiptError``).

Every wire error carries a machine-readable ``reason`` (a ``str`` enum, so it compares equal to
its plain code and can be stored as text) and, for SenML, the index of the offending record and
the offending field, so the quarantine says exactly what was wrong without parsing a message.
"""

from __future__ import annotations

import enum


class GatewayError(Exception):
    """Base of every error the gateway package raises."""


class WireError(GatewayError):
    """Base of every error raised by the gateway's wire contract (SenML codec, topics)."""


class SenMLReason(enum.StrEnum):
    """Why a SenML pack was refused. Values are the stored codes; never rename one."""

    NOT_JSON = "not_json"
    """Not UTF-8 JSON (RFC 8428 §5: "Only the UTF-8 form of JSON is allowed")."""
    NOT_ARRAY = "not_array"
    """The root is not an array (§5: "The root JSON value consists of an array")."""
    RECORD_NOT_OBJECT = "record_not_object"
    """An element of the root array is not an object."""
    WRONG_TYPE = "wrong_type"
    """A field has the wrong JSON type (§5, Table 2), or bver is not a positive integer (§4.1)."""
    NOT_FINITE = "not_finite"
    """NaN, an infinity, a number that overflows a double, or a base + field sum that does."""
    UNKNOWN_MANDATORY_FIELD = "unknown_mandatory_field"
    """A label ending in '_' that we do not understand (§4.4: an error MUST be generated)."""
    NO_VALUE = "no_value"
    """No v/vs/vb/vd and no sum, after base resolution (§4.2)."""
    MULTIPLE_VALUES = "multiple_values"
    """More than one of v/vs/vb/vd (§4.2: "Exactly one Value field MUST appear")."""
    BAD_NAME = "bad_name"
    """The resolved name (bn + n) is empty or breaks §4.5.1's character rules."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """bver above 10, the version of RFC 8428 (§4.4: we MUST NOT use the object)."""
    MIXED_VERSIONS = "mixed_versions"
    """Records of one pack with different versions (§4.4: they MUST all be the same)."""
    BAD_DATA_VALUE = "bad_data_value"
    """vd is not base64url without padding (§4.3, RFC 4648 §5)."""


# An empty pack ("[]") is not an error, so there is deliberately no "empty_pack" reason: §4 calls
# the pack "a series of SenML Records" and sets no minimum, an empty pack carries no reading that
# could be lost, and refusing it would fill the quarantine with harmless keep-alives.


class SenMLError(WireError):
    """A SenML pack broke RFC 8428 (or our stricter reading of it, documented per reason).

    ``index`` is the position of the offending record in the pack's array (``None`` when the
    pack as a whole is wrong); ``field`` is the offending label (``None`` when no single label is
    to blame).
    """

    reason: SenMLReason
    index: int | None
    field: str | None
    message: str

    def __init__(
        self,
        reason: SenMLReason,
        message: str,
        *,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason, message, index, field)
        self.reason = reason
        self.message = message
        self.index = index
        self.field = field

    def __str__(self) -> str:
        where = "" if self.index is None else f" at record {self.index}"
        if self.field is not None:
            where += f" (field {self.field})"
        return f"{self.reason.value}{where}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"SenMLError(reason={self.reason.value!r}, index={self.index!r}, "
            f"field={self.field!r}, message={self.message!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive Exception's default pickling; a worker pool that
        # ships errors between processes needs them to.
        return (_rebuild_senml_error, (self.reason, self.message, self.index, self.field))


def _rebuild_senml_error(
    reason: SenMLReason, message: str, index: int | None, field: str | None
) -> SenMLError:
    return SenMLError(reason, message, index=index, field=field)


class TopicReason(enum.StrEnum):
    """Why a topic, gateway id or shared-subscription group was refused."""

    WRONG_LEVELS = "wrong_levels"
    """Not four '/'-separated levels (``ssc/v1/<gateway_id>/<channel>``)."""
    WRONG_PREFIX = "wrong_prefix"
    """The first level is not ``ssc``."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """The second level is not a version we speak (``v1``)."""
    BAD_GATEWAY_ID = "bad_gateway_id"
    """The gateway id breaks ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``."""
    UNKNOWN_CHANNEL = "unknown_channel"
    """The last level is not ``up``, ``status`` or ``down``."""
    BAD_SHARE_NAME = "bad_share_name"
    """A shared-subscription group that is empty or holds '/', '+' or '#' (MQTT 5 §4.8.2)."""


class TopicError(WireError):
    """A topic (or a part of one) that is not in the ``ssc/v1/<gateway_id>/<channel>`` scheme."""

    reason: TopicReason
    topic: str
    message: str

    def __init__(self, reason: TopicReason, topic: str, message: str) -> None:
        super().__init__(reason, topic, message)
        self.reason = reason
        self.topic = topic
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message} (topic {self.topic!r})"
