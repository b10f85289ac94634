"""Turn one tracking request into validated, enriched messages, or refuse it whole.

A batch is atomic: if any message in it is invalid, none is accepted and the 400 lists every
invalid message by path and index, so a client can drop those and resend the rest. Nothing valid
is dropped without the client being told, and nothing invalid reaches the spool.

Addresses are truncated here (IPv4 to /24, IPv6 to /48): the spool and ClickHouse only ever hold
the network part.

The work here is pure (no I/O) so the request path stays a single Redis round trip.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from hashlib import blake2b
from typing import Any, NoReturn

import msgspec

from collector import wire
from collector.consent import ConsentPolicy
from collector.consent import suppressed as is_suppressed
from collector.errors import InvalidInput, with_path
from collector.identifiers import check_identifiers

__all__ = ["ID_BYTES", "Intake", "read_request", "truncate_ip"]

ID_BYTES = (
    16  # blake2b-128 of the messageId: fixed size in the dedup sets, no collisions in practice
)
_MEDIA_TYPES = {"application/json", "text/plain"}  # text/plain: what sendBeacon posts
_MAX_ERRORS = 20


@dataclass(slots=True)
class Intake:
    """What one request carries once validated: the messages and their dedup ids, in order."""

    messages: list[wire.Message]
    ids: list[bytes]
    write_key: str | None
    duplicates: int = 0  # repeats of a messageId within this very request
    withheld: int = 0  # dropped by the consent policy or the suppression list


def read_request(
    body: bytes,
    *,
    kind: str,
    content_type: str | None,
    content_encoding: str | None,
    received_at: datetime,
    ip: str | None,
    consent: ConsentPolicy | None = None,
    suppressed: frozenset[bytes] = frozenset(),
) -> Intake:
    """Validate one request body for endpoint ``kind`` ("batch", "track", "page", …).

    ``consent`` and ``suppressed`` (identity hashes of erased people) decide what is kept of
    valid messages; see collector.consent.
    """
    _check_media_type(content_type)
    limit = wire.MAX_BATCH_BYTES if kind == "batch" else wire.MAX_MESSAGE_BYTES
    body = _decode_body(body, content_encoding, limit)
    if kind == "batch":
        messages, write_key, sent_at, context = _read_batch(body)
    else:
        messages, write_key, sent_at, context = (
            [_decode(wire.BY_TYPE[kind], body, "$")],
            None,
            None,
            None,
        )
        write_key = _decode(wire.ENVELOPE, body, "$").write_key
    batch = kind == "batch"
    return _enrich(
        messages, write_key, received_at, sent_at, context, ip, batch, consent, suppressed, body
    )


def _check_media_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in _MEDIA_TYPES:
        raise InvalidInput(
            "unsupported_media_type",
            f"Content-Type must be application/json (or text/plain from sendBeacon), "
            f"got {content_type!r}",
        )


def _decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        try:
            inflater = zlib.decompressobj(wbits=31)
            body = inflater.decompress(body, limit + 1)
            if not inflater.eof and len(body) <= limit:
                raise InvalidInput("invalid_gzip", "the gzip body is truncated")
        except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
            raise InvalidInput("invalid_gzip", f"the body is not valid gzip: {exc}") from exc
    elif encoding != "identity":
        raise InvalidInput(
            "unsupported_encoding", f"Content-Encoding must be gzip or absent, got {encoding!r}"
        )
    if len(body) > limit:
        what = "batch" if limit == wire.MAX_BATCH_BYTES else "message"
        raise InvalidInput(
            f"{what}_too_large", f"the {what} is over {limit // 1024} KB ({len(body)} bytes)"
        )
    try:  # raw JSON fields are kept unparsed, so check the encoding of all of it here
        body.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInput("invalid_json", f"$: the body is not UTF-8 (byte {exc.start})") from None
    return body


def _read_batch(body: bytes) -> tuple[list[wire.Message], str | None, datetime | None, Any]:
    batch = _decode(wire.BATCH, body, "$")
    raws = batch.batch
    if not raws:
        raise InvalidInput("invalid_message", "$.batch: must hold at least one message")
    if len(body) > wire.MAX_MESSAGE_BYTES and any(len(r) > wire.MAX_MESSAGE_BYTES for r in raws):
        _refuse_messages(raws)
    try:  # all messages in one decoder call: the common, valid case
        messages = wire.MESSAGES.decode(b"[" + b",".join(raws) + b"]")
    except msgspec.ValidationError:
        _refuse_messages(raws)
    return messages, batch.write_key, batch.sent_at, batch.context


def _refuse_messages(raws: list[msgspec.Raw]) -> NoReturn:
    """Decode message by message to name every invalid one, then refuse the batch."""
    errors: list[dict[str, object]] = []
    code = ""
    for index, raw in enumerate(raws):
        where = f"$.batch[{index}]"
        try:
            if len(raw) > wire.MAX_MESSAGE_BYTES:
                raise InvalidInput(
                    "message_too_large",
                    f"{where}: the message is over {wire.MAX_MESSAGE_BYTES // 1024} KB "
                    f"({len(raw)} bytes)",
                )
            _decode(wire.MESSAGE, raw, where)
        except InvalidInput as exc:
            path, _, text = exc.message.partition(": ")
            errors.append({"index": index, "path": path, "message": text})
            code = code or exc.code
    _refuse(errors, code)


def _refuse(errors: list[dict[str, object]], code: str) -> NoReturn:
    first = errors[0]
    more = f" (and {len(errors) - 1} more invalid messages)" if len(errors) > 1 else ""
    raise InvalidInput(code, f"{first['path']}: {first['message']}{more}", errors[:_MAX_ERRORS])


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes | msgspec.Raw, where: str) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput("invalid_message", with_path(str(exc), where, decoder.type)) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput("invalid_json", f"{where}: {exc}") from None


_DOTTED_QUAD = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_IP_KEY = b'"ip"'
_CONSENT = b'"consent"'
_EXTERNAL_IDS = b'"externalIds"'
_CONTEXT_KEYS = (_IP_KEY, _CONSENT, _EXTERNAL_IDS)


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


def _truncate_context_ip(msg: wire.Message) -> None:
    """A client-sent ``context.ip`` is truncated before anything stores it."""
    context = wire.as_dict(msg.context)
    if "ip" not in context:
        return
    try:
        if not isinstance(context["ip"], str):
            raise ValueError
        context["ip"] = truncate_ip(context["ip"])
    except ValueError:
        raise ValueError(f"`context.ip` must be an IP address, got {context['ip']!r}") from None
    msg.context = msgspec.Raw(msgspec.json.encode(context))


def _enrich(
    messages: list[wire.Message],
    write_key: str | None,
    received_at: datetime,
    sent_at: datetime | None,
    context: dict[str, Any] | None,
    ip: str | None,
    in_batch: bool,
    consent: ConsentPolicy | None,
    hashes: frozenset[bytes],
    body: bytes,
) -> Intake:
    """Check, complete and filter the messages in one pass (this runs for every message).

    Checks that parse JSON run only for messages whose raw context holds the key they look for,
    and only if the request body holds it at all.
    """
    ids: list[bytes] = []
    seen: set[bytes] = set()
    kept: list[wire.Message] = []
    errors: list[dict[str, object]] = []
    duplicates = withheld = 0
    try:  # only the network part of an address is ever stored
        ip = truncate_ip(ip) if ip else None
    except ValueError:  # a peer address that is not IP (a Unix socket): nothing to keep
        ip = None
    check, identify, empty = wire.check, wire.Identify, wire.EMPTY  # locals: this loop is hot
    wanted = [key for key in _CONTEXT_KEYS if key in body]
    for index, msg in enumerate(messages):
        if context:  # batch-level context: defaults for each message's own (rare)
            merged = {**context, **wire.as_dict(msg.context)}
            msg.context = msgspec.Raw(msgspec.json.encode(merged))
        # The keys that need work, in this message's context (most requests have none at all).
        found = (
            ()
            if not wanted or msg.context is empty
            else [k for k in wanted if k in bytes(msg.context)]
        )
        try:
            check(msg)
            if type(msg) is identify or _EXTERNAL_IDS in found:
                check_identifiers(msg)
            if _IP_KEY in found:
                _truncate_context_ip(msg)
        except ValueError as exc:
            where = f"$.batch[{index}]" if in_batch else "$"
            path, _, text = with_path(str(exc), where).partition(": ")
            errors.append({"index": index, "path": path, "message": text})
            continue
        if msg.message_id is None:
            msg.message_id = str(uuid.uuid4())
        digest = blake2b(msg.message_id.encode(), digest_size=ID_BYTES).digest()
        if digest in seen:  # the same message twice in one request: keep the first
            duplicates += 1
            continue
        seen.add(digest)
        msg.received_at = received_at
        msg.request_ip = ip
        if msg.anonymized:  # the collector's to set, never the client's
            msg.anonymized = False
        if msg.sent_at is None:
            msg.sent_at = sent_at
        if hashes and is_suppressed(msg, hashes):
            withheld += 1
            continue
        if consent is not None and _CONSENT in found and consent.apply(msg) is None:
            withheld += 1
            continue
        ids.append(digest)
        kept.append(msg)
    if errors:
        _refuse(errors, "invalid_message")
    return Intake(kept, ids, write_key, duplicates, withheld)
