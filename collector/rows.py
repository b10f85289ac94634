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
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec

from collector import wire
from collector.schema import EVENT_COLUMNS

__all__ = ["event_time", "to_columns", "truncate_ip"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode
_DOTTED_QUAD = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")


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


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def to_columns(messages: list[wire.Message]) -> list[list[Any]]:
    """One list per column of EVENT_COLUMNS, in that order."""
    columns: list[list[Any]] = [[] for _ in EVENT_COLUMNS]
    (
        message_id, type_, event, name, timestamp, original_timestamp, sent_at, received_at,
        anonymous_id, user_id, profile_id, previous_id, group_id, page_url, page_path,
        page_referrer, page_title, user_agent, ip, library_name, library_version, channel,
        properties, traits, context,
    ) = columns  # fmt: skip
    for msg in messages:
        ctx = wire.as_dict(msg.context)
        page = _object(ctx.get("page"))
        library = _object(ctx.get("library"))
        address = _safe_ip(ctx["ip"]) if "ip" in ctx else _safe_ip(msg.request_ip)
        if "ip" in ctx:
            ctx["ip"] = address
            context.append(_encode(ctx))
        else:
            context.append(bytes(msg.context))
        props = getattr(msg, "properties", wire.EMPTY)
        msg_traits = getattr(msg, "traits", wire.EMPTY)
        if isinstance(msg, wire.Identify) and isinstance(ctx.get("traits"), dict):
            # Rudder sends identify traits in context.traits
            msg_traits = _encode({**ctx["traits"], **wire.as_dict(msg_traits)})
        page_props = wire.as_dict(props) if isinstance(msg, wire.Page) else {}
        when, original = event_time(msg)

        message_id.append(msg.message_id or "")
        type_.append(msg.__struct_config__.tag)
        event.append(msg.event if isinstance(msg, wire.Track) else "")
        name.append(_text(getattr(msg, "name", None)))
        timestamp.append(when)
        original_timestamp.append(original)
        sent_at.append(msg.sent_at)
        received_at.append(msg.received_at)
        anonymous_id.append(msg.anonymous_id or "")
        user_id.append(msg.user_id or "")
        profile_id.append("")
        previous_id.append(msg.previous_id if isinstance(msg, wire.Alias) else "")
        group_id.append(msg.group_id if isinstance(msg, wire.Group) else "")
        page_url.append(_text(page_props.get("url")) or _text(page.get("url")))
        page_path.append(_text(page_props.get("path")) or _text(page.get("path")))
        page_referrer.append(_text(page_props.get("referrer")) or _text(page.get("referrer")))
        page_title.append(_text(page_props.get("title")) or _text(page.get("title")))
        user_agent.append(_text(ctx.get("userAgent")))
        ip.append(address)
        library_name.append(_text(library.get("name")))
        library_version.append(_text(library.get("version")))
        channel.append(msg.channel or "")
        properties.append(bytes(props))
        traits.append(bytes(msg_traits))
    return columns
