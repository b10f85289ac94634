"""Errors the collector raises; the edge turns them into HTTP answers."""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache
from typing import Any

import msgspec.inspect as mi

__all__ = [
    "InvalidInput",
    "QueryFailed",
    "SpoolFull",
    "StoreUnavailable",
    "Unauthorized",
    "expected",
    "with_path",
]

_MISSING = re.compile(r"^Object missing required field `([^`]+)`(?: - at `\$(.*)`)?$")
_AT = re.compile(r"^(.*) - at `\$(.*)`$")
_OWN = re.compile(r"^`([\w.]+)` (must .*)$")  # our validators: "`field` must …"
# msgspec's words for a value outside a Literal or an Enum ("Invalid enum value 'x'") and for
# an unknown tag of a tagged union ("Invalid value 'x'"): they never say what would do.
_CHOICE = re.compile(r"^Invalid (?:enum )?value .*?(?: - at `\$(.*)`)?$")
_PART = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


def with_path(text: str, where: str = "$", of: Any = None) -> str:
    """Rewrite a msgspec message ``… - at `$.x``` as ``$.batch[3].x: …``: the path leads.
    Given ``of``, the type that was decoded, a value outside a fixed set also lists the set.

    >>> with_path("Object missing required field `event`", "$.batch[3]")
    '$.batch[3].event: required field is missing'
    >>> with_path("Expected `object`, got `str` - at `$.context`")
    '$.context: Expected `object`, got `str`'
    >>> with_path("`properties` must be a JSON object", "$.batch[0]")
    '$.batch[0].properties: must be a JSON object'
    >>> from collector.consent import ConsentPolicy
    >>> with_path("Invalid enum value 'keep' - at `$.mode`", of=ConsentPolicy)
    "$.mode: Invalid enum value 'keep' — expected one of anonymize, drop"
    """
    choices = expected(text, of) if of is not None else ""
    missing = _MISSING.match(text)
    if missing:
        return f"{where}{missing.group(2) or ''}.{missing.group(1)}: required field is missing"
    at = _AT.match(text)
    if at:
        where, text = f"{where}{at.group(2)}", at.group(1)
    own = _OWN.match(text)
    if own:
        return f"{where}.{own.group(1)}: {own.group(2)}"
    return f"{where}: {text}{choices}"


def expected(text: str, of: Any) -> str:
    """`` — expected one of a, b, c`` when msgspec's ``text`` refuses a value of a fixed set
    (a Literal, an Enum, a tagged union's tag) in type ``of``; else "".

    >>> from collector.onchain import OnchainBatch
    >>> expected("Invalid enum value 'lend' - at `$.events[2].kind`", OnchainBatch)
    ' — expected one of burn, mint, other, stake, swap, transfer, unstake, vote'
    >>> from collector.wire import Message
    >>> expected("Invalid value 'launch' - at `$.type`", Message)
    ' — expected one of alias, group, identify, page, screen, track'
    """
    found = _CHOICE.match(text)
    if found is None:
        return ""
    try:
        values = _values(of, found.group(1) or "")
    except (TypeError, ValueError):  # a type inspect cannot read: the 400 stays as it was
        return ""
    return f" — expected one of {', '.join(values)}" if values else ""


@lru_cache(maxsize=512)
def _values(of: Any, path: str) -> tuple[str, ...]:
    """The values the field at ``path`` (msgspec's: ``.a[0].b``, ``[...]`` for any key) of type
    ``of`` may take, sorted; () when it is not a field of a fixed set."""
    types: list[Any] = [mi.type_info(of)]
    for name, index in _PART.findall(path):
        types = [t for parent in types for t in _child(parent, name, index)]
    values: set[str] = set()
    for found in types:
        for t in _members(found):
            if isinstance(t, mi.LiteralType):
                values.update(str(v) for v in t.values)
            elif isinstance(t, mi.EnumType):
                values.update(str(m.value) for m in t.cls if isinstance(m, Enum))
            elif isinstance(t, _Tag):
                values.add(t.value)
    return tuple(sorted(values))


class _Tag:
    """A tagged union's tag field (not a field of its members' own)."""

    def __init__(self, value: Any):
        self.value = str(value)


def _members(t: Any) -> list[Any]:
    """``t``, or the members of a union (Annotated metadata unwrapped)."""
    if isinstance(t, mi.Metadata):
        return _members(t.type)
    if isinstance(t, mi.UnionType):
        return [m for member in t.types for m in _members(member)]
    return [t]


def _child(parent: Any, name: str, index: str) -> list[Any]:
    """The types at ``.name`` (a field, or a dict's key) or ``[index]`` below ``parent``."""
    found: list[Any] = []
    for t in _members(parent):
        if isinstance(t, mi.StructType | mi.DataclassType | mi.TypedDictType) and name:
            tag = getattr(t, "tag", None)  # a tagged union's member (Structs only)
            if getattr(t, "tag_field", None) == name and tag is not None:
                found.append(_Tag(tag))
            found += [f.type for f in t.fields if f.encode_name == name]
        elif isinstance(t, mi.DictType):
            found.append(t.value_type)
        elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            if index:
                found.append(t.item_type)
        elif isinstance(t, mi.TupleType) and index.isdecimal() and int(index) < len(t.item_types):
            found.append(t.item_types[int(index)])
    return found


class InvalidInput(Exception):
    """The request cannot be accepted as sent: HTTP 400.

    ``code`` is stable for programs, ``message`` names the field path for people, and
    ``errors`` lists every invalid message of a batch as ``{"index", "path", "message"}``.
    """

    def __init__(self, code: str, message: str, errors: list[dict[str, object]] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors or []


class Unauthorized(Exception):
    """The write or secret key is missing or wrong: HTTP 401."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = "unauthorized"
        self.message = message


class SpoolFull(Exception):
    """The spool reached its configured limit: HTTP 503 with Retry-After (back-pressure)."""

    def __init__(self, length: int, limit: int, retry_after: int = 5):
        message = f"spool holds {length} entries, its limit is {limit}; retry in {retry_after} s"
        super().__init__(message)
        self.code = "spool_full"
        self.message = message
        self.retry_after = retry_after


class NotReplicated(Exception):
    """The spool took the batch but no replica confirmed it in time (``--spool-replicas``):
    HTTP 503 with Retry-After. A retry stores nothing twice (its ids are in the dedup window)."""

    def __init__(self, confirmed: int, wanted: int, timeout_ms: int):
        message = (f"the spool took the batch but {confirmed} of {wanted} replica(s) confirmed "
                   f"it within {timeout_ms} ms; retry it: it is stored once")  # fmt: skip
        super().__init__(message)
        self.code = "spool_not_replicated"
        self.message = message
        self.retry_after = 1


class QueryFailed(Exception):
    """ClickHouse refused or failed a read-only query: HTTP 400.

    ``code`` is ``read_only`` for a refused write, else ``query_failed``.
    """

    def __init__(self, message: str, code: str = "query_failed"):
        super().__init__(message)
        self.code = code
        self.message = message


class StoreUnavailable(Exception):
    """The event store does not answer: HTTP 503."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = "store_unavailable"
        self.message = message
