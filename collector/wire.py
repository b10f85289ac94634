"""Wire types of the Segment-compatible tracking API.

Messages follow the Segment spec (https://segment.com/docs/connections/spec/): camelCase on
the wire, one struct per message type, told apart by the ``type`` tag. Unknown top-level
fields are ignored rather than refused, because every SDK release adds some (``_metadata``,
``integrations``, ``rudderId``…); ``properties``, ``traits`` and ``context`` are kept whole.

The same structs travel through the spool: the collector sets ``receivedAt`` (and ``sentAt``
and ``context.ip`` when the client left them out) before appending.

Examples:
    >>> msg = MESSAGE.decode(b'{"type": "track", "event": "Signed Up", "userId": "u1"}')
    >>> msg.event, msg.user_id
    ('Signed Up', 'u1')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw, Struct, field

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "Alias",
    "Batch",
    "Group",
    "Identify",
    "Message",
    "MESSAGE",
    "MESSAGES",
    "Page",
    "Screen",
    "Track",
]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024

# ClickHouse's DateTime64 holds 1900..2299; anything outside is a client bug, refused at the door
# so that no accepted message can later fail the sink.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)

Name = Annotated[str, Meta(min_length=1, max_length=255)]
Id = Annotated[str, Meta(min_length=1, max_length=255)] | int
Traits = dict[str, Any]


def _check_time(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # Segment treats a naive timestamp as UTC.
        value = value.replace(tzinfo=UTC)
    if not _EARLIEST <= value < _LATEST:
        raise ValueError(f"`{name}` must lie between 1970 and 2200, got {value.isoformat()}")
    return value


class _Message(Struct, tag_field="type", rename="camel", kw_only=True, omit_defaults=True):
    """Fields every message type shares."""

    message_id: Annotated[str, Meta(min_length=1, max_length=255)] | None = None
    anonymous_id: Id | None = None
    user_id: Id | None = None
    timestamp: datetime | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime | None = None
    channel: Annotated[str, Meta(max_length=64)] | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.user_id, int):
            self.user_id = str(self.user_id)
        if isinstance(self.anonymous_id, int):
            self.anonymous_id = str(self.anonymous_id)
        self._require_identity()
        self.timestamp = _check_time(self.timestamp, "timestamp")
        self.original_timestamp = _check_time(self.original_timestamp, "originalTimestamp")
        self.sent_at = _check_time(self.sent_at, "sentAt")
        self.received_at = _check_time(self.received_at, "receivedAt")

    def _require_identity(self) -> None:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("one of `userId` or `anonymousId` is required")


class Track(_Message, tag="track"):
    event: Name
    properties: dict[str, Any] = field(default_factory=dict)


class Page(_Message, tag="page"):
    name: Annotated[str, Meta(max_length=255)] | None = None
    category: Annotated[str, Meta(max_length=255)] | None = None
    properties: dict[str, Any] = field(default_factory=dict)


class Screen(_Message, tag="screen"):
    name: Annotated[str, Meta(max_length=255)] | None = None
    category: Annotated[str, Meta(max_length=255)] | None = None
    properties: dict[str, Any] = field(default_factory=dict)


class Identify(_Message, tag="identify"):
    traits: Traits = field(default_factory=dict)


class Group(_Message, tag="group"):
    group_id: Id
    traits: Traits = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.group_id, int):
            self.group_id = str(self.group_id)
        super().__post_init__()


class Alias(_Message, tag="alias"):
    previous_id: Id

    def __post_init__(self) -> None:
        if isinstance(self.previous_id, int):
            self.previous_id = str(self.previous_id)
        super().__post_init__()

    def _require_identity(self) -> None:
        if self.user_id is None:
            raise ValueError("`userId` is required (the new identity the previous one merges into)")


Message = Track | Page | Screen | Identify | Alias | Group


class Batch(Struct, rename="camel", kw_only=True):
    """Body of ``POST /v1/batch``: messages stay raw here so each is size-checked on its own."""

    batch: list[Raw]
    sent_at: datetime | None = None
    write_key: str | None = None
    context: dict[str, Any] | None = None


class Envelope(Struct, rename="camel", kw_only=True):
    """The fields a single-message body may carry besides the message itself."""

    write_key: str | None = None


MESSAGE = msgspec.json.Decoder(Message)
MESSAGES = msgspec.json.Decoder(list[Message])
BATCH = msgspec.json.Decoder(Batch)
ENVELOPE = msgspec.json.Decoder(Envelope)
BY_TYPE: dict[str, msgspec.json.Decoder[Any]] = {
    cls.__struct_config__.tag: msgspec.json.Decoder(cls)  # type: ignore[misc]
    for cls in (Track, Page, Screen, Identify, Alias, Group)
}
