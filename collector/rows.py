"""Map spool messages to rows of the ``events`` table (column-oriented, as the sink inserts).

Event time is corrected for client clock skew the way Segment does it:
``timestamp = original + (receivedAt - sentAt)`` when the client says when it sent the message,
and is never later than ``receivedAt`` (nothing happens after it is received).

IP addresses are truncated here, so only the network part reaches ClickHouse (also inside the
stored ``context``); an unparseable ``context.ip`` is stored as empty.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec

from collector import wire
from collector.schema import EVENT_COLUMNS

__all__ = ["event_time", "to_columns", "truncate_ip"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_encode = msgspec.json.Encoder().encode
_IP_KEY = b'"ip"'
_WITH_PROPERTIES = (wire.Track, wire.Page, wire.Screen)
_WITH_TRAITS = (wire.Identify, wire.Group)
_DOTTED_QUAD = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")


class _Page(msgspec.Struct):
    url: str = ""
    path: str = ""
    referrer: str = ""
    title: str = ""


class _Library(msgspec.Struct):
    name: str = ""
    version: str = ""


class _Context(msgspec.Struct, rename="camel"):
    """The context fields that have columns; the rest stays in the raw JSON only."""

    page: _Page = msgspec.field(default_factory=_Page)
    library: _Library = msgspec.field(default_factory=_Library)
    user_agent: str = ""
    traits: dict[str, Any] = msgspec.field(default_factory=dict)


_read_context_json = msgspec.json.Decoder(_Context).decode
_read_page_json = msgspec.json.Decoder(_Page).decode


def _typed(read: Any, source: Any, kind: type[Any]) -> Any:
    """Read the fields that have columns; a field of an odd type (a number for a URL, say) is
    left empty rather than failing the batch — the raw JSON keeps it as sent."""
    try:
        return read(source)
    except msgspec.ValidationError:
        fields = source if isinstance(source, dict) else msgspec.json.decode(source)
        return msgspec.convert(_strings(fields, kind), kind)


def _strings(fields: dict[str, Any], kind: type[Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, str):
            kept[name] = value
        elif isinstance(value, dict) and name in ("page", "library"):
            kept[name] = _strings(value, kind)
        elif isinstance(value, dict) and name == "traits":
            kept[name] = value
    return kept


@lru_cache(maxsize=65_536)
def truncate_ip(value: str) -> str:
    """Keep the network, drop the host: IPv4 to /24, IPv6 to /48. ValueError if not an IP.

    >>> truncate_ip("203.0.113.77"), truncate_ip("2001:db8:abcd:12::1")
    ('203.0.113.0', '2001:db8:abcd::')
    """
    quad = _DOTTED_QUAD.fullmatch(value)
    if quad:  # the common case, without ipaddress's cost
        a, b, c, d = (int(part) for part in quad.groups())
        if max(a, b, c, d) <= 255:
            return f"{a}.{b}.{c}.0"
    address = ipaddress.ip_address(value.strip())
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def _safe_ip(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    try:
        return truncate_ip(value)
    except ValueError:
        return ""


def event_time(msg: wire.Message) -> tuple[datetime, datetime]:
    """(corrected timestamp, original timestamp) of ``msg``; ``receivedAt`` must be set."""
    received = msg.received_at or datetime.now(UTC)
    original = msg.timestamp or msg.original_timestamp or received
    corrected = original
    if msg.sent_at is not None and (msg.timestamp or msg.original_timestamp):
        corrected = original + (received - msg.sent_at)
    return min(max(corrected, _EPOCH), received), original


def _ms(value: datetime | None) -> int | None:
    """Milliseconds since the epoch: what a DateTime64(3) column holds (cheaper to send)."""
    return None if value is None else (value - _EPOCH) // _MS


def to_columns(messages: list[wire.Message]) -> list[list[Any]]:
    """One list per column of EVENT_COLUMNS, in that order."""
    columns: list[list[Any]] = [[] for _ in EVENT_COLUMNS]
    (
        message_id, type_, event, name, timestamp, original_timestamp, sent_at, received_at,
        anonymous_id, user_id, profile_id, previous_id, group_id, page_url, page_path,
        page_referrer, page_title, user_agent, ip, library_name, library_version, channel,
        properties, traits, context,
    ) = columns  # fmt: skip
    no_page = _Page()
    for msg in messages:
        raw_context = bytes(msg.context)
        if _IP_KEY in raw_context and "ip" in (full := wire.as_dict(msg.context)):
            # The client's own address: stored truncated, in the column and in the context.
            address = full["ip"] = _safe_ip(full["ip"])
            context.append(_encode(full))
            ctx = _typed(lambda f: msgspec.convert(f, _Context), full, _Context)
        else:
            address = _safe_ip(msg.request_ip)
            context.append(raw_context)
            ctx = _typed(_read_context_json, raw_context, _Context)
        kind = type(msg)
        props = msg.properties if kind in _WITH_PROPERTIES else wire.EMPTY
        msg_traits = msg.traits if kind in _WITH_TRAITS else wire.EMPTY
        if kind is wire.Identify and ctx.traits:  # Rudder sends identify traits here
            msg_traits = _encode({**ctx.traits, **wire.as_dict(msg_traits)})
        page = ctx.page
        own = _typed(_read_page_json, props, _Page) if kind is wire.Page else no_page
        when, original = event_time(msg)

        message_id.append(msg.message_id or "")
        type_.append(msg.__struct_config__.tag)
        event.append(msg.event if kind is wire.Track else "")
        name.append((msg.name or "") if kind in (wire.Page, wire.Screen) else "")
        timestamp.append(_ms(when))
        original_timestamp.append(_ms(original))
        sent_at.append(_ms(msg.sent_at))
        received_at.append(_ms(msg.received_at))
        anonymous_id.append(msg.anonymous_id or "")
        user_id.append(msg.user_id or "")
        profile_id.append("")
        previous_id.append(msg.previous_id if kind is wire.Alias else "")
        group_id.append(msg.group_id if kind is wire.Group else "")
        page_url.append(own.url or page.url)
        page_path.append(own.path or page.path)
        page_referrer.append(own.referrer or page.referrer)
        page_title.append(own.title or page.title)
        user_agent.append(ctx.user_agent)
        ip.append(address)
        library_name.append(ctx.library.name)
        library_version.append(ctx.library.version)
        channel.append(msg.channel or "")
        properties.append(bytes(props))
        traits.append(bytes(msg_traits))
    return columns
