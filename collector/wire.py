"""Wire types of the Segment-compatible tracking API.

Messages follow the Segment spec (https://segment.com/docs/connections/spec/): camelCase on
the wire, one struct per message type, told apart by the ``type`` tag. Unknown top-level
fields are ignored rather than refused, because every SDK release adds some (``_metadata``,
``integrations``, ``rudderId``…); ``properties``, ``traits`` and ``context`` are kept whole.

``properties``, ``traits`` and ``context`` stay raw JSON (checked to be objects): the request
path never builds Python dicts for them, and the sink stores them as they came. Call
``as_dict`` to read one.

The same structs travel through the spool: the collector sets ``receivedAt``, ``requestIp``
and ``sentAt`` (when the client left it out) before appending.

Examples:
    >>> msg = MESSAGE.decode(b'{"type": "track", "event": "Signed Up", "userId": "u1",'
    ...                      b' "properties": {"plan": "pro"}}')
    >>> msg.event, msg.user_id, as_dict(msg.properties)
    ('Signed Up', 'u1', {'plan': 'pro'})
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw, Struct, field

__all__ = [
    "EMPTY",
    "MAX_BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "WALLET_PREFIX",
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
    "as_dict",
    "check",
    "event_time",
    "from_lines",
    "to_lines",
]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024

# ClickHouse's DateTime64 holds 1900..2299; anything outside is a client bug, refused at the door
# so that no accepted message can later fail the sink.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)

# Values SDKs and templates emit when they have no id: refusing them keeps strangers apart.
BLOCKED = frozenset({"", "anonymous", "null", "undefined", "0", "-1", "[object object]"})
Name = Annotated[str, Meta(min_length=1, max_length=255)]
Id = Annotated[str, Meta(min_length=1, max_length=255)] | int
EMPTY = Raw(b"{}")  # absent properties, traits or context (a default factory keeps it out of
# the JSON schema, which cannot show a Raw default)
_OPEN_BRACE = ord("{")
_as_dict = msgspec.json.Decoder(dict[str, Any]).decode


def as_dict(raw: Raw) -> dict[str, Any]:
    """A raw JSON object field as a dict."""
    return _as_dict(raw)


class _Message(
    Struct, tag_field="type", rename="camel", kw_only=True, omit_defaults=True, gc=False
):
    """Fields every message type shares.

    ``gc=False``: messages hold only strings, times and raw JSON, never cycles, so the cyclic
    garbage collector need not track the thousands a second the collector creates.
    """

    message_id: Annotated[str, Meta(min_length=1, max_length=255)] | None = None
    anonymous_id: Id | None = None
    user_id: Id | None = None
    timestamp: datetime | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime | None = None
    channel: Annotated[str, Meta(max_length=64)] | None = None
    context: Raw = field(default_factory=lambda: EMPTY)
    request_ip: str | None = None  # set by the collector: the network the request came from
    anonymized: bool = False  # set by the collector: consent denied, kept without identity


class Track(_Message, tag="track", kw_only=True):
    event: Name
    properties: Raw = field(default_factory=lambda: EMPTY)


class Page(_Message, tag="page", kw_only=True):
    name: Annotated[str, Meta(max_length=255)] | None = None
    category: Annotated[str, Meta(max_length=255)] | None = None
    properties: Raw = field(default_factory=lambda: EMPTY)


class Screen(_Message, tag="screen", kw_only=True):
    name: Annotated[str, Meta(max_length=255)] | None = None
    category: Annotated[str, Meta(max_length=255)] | None = None
    properties: Raw = field(default_factory=lambda: EMPTY)


class Identify(_Message, tag="identify", kw_only=True):
    traits: Raw = field(default_factory=lambda: EMPTY)


class Group(_Message, tag="group", kw_only=True):
    group_id: Id
    traits: Raw = field(default_factory=lambda: EMPTY)


class Alias(_Message, tag="alias", kw_only=True):
    previous_id: Id


Message = Track | Page | Screen | Identify | Alias | Group


# The anonymous identity of a wallet (on-chain events, proven links): only the engine makes it.
WALLET_PREFIX = "wallet:"
_RESERVED = (
    "`{}` must not start with wallet: (the engine's own identity for a wallet; prove a wallet "
    "with POST /v1/wallets/link)"
)


def check(msg: Message) -> None:
    """What msgspec cannot check, done once per message at intake (not on every decode).

    Numeric ids become strings and naive times UTC; placeholder ids ("null", "undefined", …)
    are refused. Raises ValueError naming the field. Written for speed: it runs per message.
    """
    user, anonymous = msg.user_id, msg.anonymous_id
    if user is not None:
        if isinstance(user, int):
            msg.user_id = user = str(user)
        elif len(user) <= 32 and user.strip().lower() in BLOCKED:
            raise ValueError(f"`userId` must be a real identifier, not the placeholder {user!r}")
    if anonymous is not None:
        if isinstance(anonymous, int):
            msg.anonymous_id = anonymous = str(anonymous)
        elif len(anonymous) <= 32 and anonymous.strip().lower() in BLOCKED:
            raise ValueError(
                f"`anonymousId` must be a real identifier, not the placeholder {anonymous!r}"
            )
        elif anonymous.startswith(WALLET_PREFIX):
            raise ValueError(_RESERVED.format("anonymousId"))
    if isinstance(msg, Alias):
        previous = msg.previous_id = str(msg.previous_id)
        if len(previous) <= 32 and previous.strip().lower() in BLOCKED:
            raise ValueError(f"`previousId` must be a real identifier, not {previous!r}")
        if previous.startswith(WALLET_PREFIX):
            raise ValueError(_RESERVED.format("previousId"))
        if user is None:
            raise ValueError("`userId` must be set: the identity that `previousId` merges into")
    elif user is None and anonymous is None:
        raise ValueError("one of `userId` or `anonymousId` is required")
    if isinstance(msg, Group) and isinstance(msg.group_id, int):
        msg.group_id = str(msg.group_id)
    if msg.timestamp is not None:
        msg.timestamp = _check_time(msg.timestamp, "timestamp")
    if msg.original_timestamp is not None:
        msg.original_timestamp = _check_time(msg.original_timestamp, "originalTimestamp")
    if msg.sent_at is not None:
        msg.sent_at = _check_time(msg.sent_at, "sentAt")
    # Raw keeps syntactically valid JSON without building it; an object starts with "{".
    if msg.context is not EMPTY and memoryview(msg.context)[0] != _OPEN_BRACE:
        raise ValueError("`context` must be a JSON object")
    if isinstance(msg, Track | Page | Screen):
        if msg.properties is not EMPTY and memoryview(msg.properties)[0] != _OPEN_BRACE:
            raise ValueError("`properties` must be a JSON object")
    elif isinstance(msg, Identify | Group):
        if msg.traits is not EMPTY and memoryview(msg.traits)[0] != _OPEN_BRACE:
            raise ValueError("`traits` must be a JSON object")


def event_time(msg: Message) -> datetime:
    """When ``msg`` happened, exactly as the ``events`` table stores it (collector.schema's intake
    view, in milliseconds): the client's time corrected for its clock's skew (+ receivedAt −
    sentAt), never after receivedAt nor before 1970. What the engine derives from an event
    (journey events) carries this time, so that SQL compares like with like.

    >>> from datetime import timedelta
    >>> at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    >>> skewed = Track(event="E", user_id="u", timestamp=at, sent_at=at + timedelta(hours=1),
    ...                received_at=at + timedelta(seconds=2))  # the client's clock is an hour fast
    >>> event_time(skewed).isoformat()
    '2026-03-01T11:00:02+00:00'
    """
    received = _ms(msg.received_at) if msg.received_at is not None else None
    sent_time = msg.timestamp or msg.original_timestamp
    original = _ms(sent_time) if sent_time is not None else received
    if original is None:  # not through intake (which sets receivedAt): now is all there is
        return datetime.now(UTC)
    corrected = original
    if sent_time is not None and msg.sent_at is not None and received is not None:
        corrected = original + received - _ms(msg.sent_at)
    if received is not None:
        corrected = min(corrected, received)
    return datetime.fromtimestamp(max(corrected, 0) / 1000, UTC)


def _ms(value: datetime) -> int:
    """Whole milliseconds since 1970, as a DateTime64(3) keeps them (it truncates)."""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)  # a naive time is UTC
    return (value - _EARLIEST) // timedelta(milliseconds=1)


def _check_time(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:  # Segment treats a naive timestamp as UTC.
        value = value.replace(tzinfo=UTC)
    if not _EARLIEST <= value < _LATEST:  # a DateTime64 column holds 1900..2299
        raise ValueError(f"`{name}` must lie between 1970 and 2200, got {value.isoformat()}")
    return value


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
_ENCODER = msgspec.json.Encoder()


def to_lines(messages: list[Message]) -> bytes:
    """Messages as newline-delimited JSON: the spool's payload format (and ClickHouse's
    JSONEachRow), one line per message, so a line can be read or amended on its own."""
    return _ENCODER.encode_lines(messages)


def from_lines(payload: bytes) -> list[Message]:
    return MESSAGE.decode_lines(payload)


BATCH = msgspec.json.Decoder(Batch)
ENVELOPE = msgspec.json.Decoder(Envelope)
BY_TYPE: dict[str, msgspec.json.Decoder[Any]] = {
    cls.__struct_config__.tag: msgspec.json.Decoder(cls)  # type: ignore[misc]
    for cls in (Track, Page, Screen, Identify, Alias, Group)
}
