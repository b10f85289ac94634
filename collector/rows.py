"""Map spool messages to rows of the ``events`` table (column-oriented, as the sink inserts).

Event time is corrected for client clock skew the way Segment does it:
``timestamp = original + (receivedAt - sentAt)`` when the client says when it sent the message,
and is never later than ``receivedAt`` (nothing happens after it is received).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from collector import wire
from collector.schema import EVENT_COLUMNS

__all__ = ["event_time", "to_columns"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode


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
        ctx = msg.context
        page = ctx.get("page") if isinstance(ctx.get("page"), dict) else {}
        library = ctx.get("library") if isinstance(ctx.get("library"), dict) else {}
        props = getattr(msg, "properties", None) or {}
        msg_traits = getattr(msg, "traits", None) or {}
        if isinstance(msg, wire.Identify) and isinstance(ctx.get("traits"), dict):
            msg_traits = {**ctx["traits"], **msg_traits}  # Rudder sends identify traits here
        when, original = event_time(msg)
        tag = msg.__struct_config__.tag
        is_page = isinstance(msg, wire.Page)

        message_id.append(msg.message_id or "")
        type_.append(tag)
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
        page_url.append(_text(props.get("url") if is_page else None) or _text(page.get("url")))
        page_path.append(_text(props.get("path") if is_page else None) or _text(page.get("path")))
        page_referrer.append(
            _text(props.get("referrer") if is_page else None) or _text(page.get("referrer"))
        )
        page_title.append(
            _text(props.get("title") if is_page else None) or _text(page.get("title"))
        )
        user_agent.append(_text(ctx.get("userAgent")))
        ip.append(_text(ctx.get("ip")))
        library_name.append(_text(library.get("name")))
        library_version.append(_text(library.get("version")))
        channel.append(msg.channel or "")
        properties.append(_encode(props).decode())
        traits.append(_encode(msg_traits).decode())
        context.append(_encode(ctx).decode())
    return columns
