"""Subscription groups, each person's state in them, and the check before a message goes out.

A group (``PUT /v1/subscriptions/{key}``) is a kind of message people opt into or out of: its
``channel`` (email, discord, telegram, webhook), its ``default`` (``opt_out``: everyone may
receive it until they unsubscribe; ``opt_in``: only those who subscribed) and, for email,
``double_opt_in`` (a subscribe through the API waits as ``pending`` until the person follows the
link in a confirmation email: ``confirmation``).

Each person's state is on their profile, ``{p:<id>}:subs`` (``profiles.store``): group ->
``<state>|<ms>|<source>``. A change applies only if it is not older than the one held
(``subscribe.lua``), so a replayed event changes nothing, and an identity merge keeps the newest
change of each group (``profiles/merge.lua``); erasure deletes the hash with the profile. Every
change is also a "Subscription Changed" event in the spool (``group``, ``state``, ``source``,
``profile_id``), so ClickHouse has the history. An unsubscribe also puts the person's address on
the suppression list for that group (``journeys.suppression``), so it holds for the address
whichever profile it turns up on later.

``check`` is what the sending path asks before each message: None (send), or a reason from
``REASONS``. Signed links (``journeys.links``) lead to the preference page, the one-click
unsubscribe and the confirmation: ``preferences_url``, ``unsubscribe_url``, ``confirm_url``.

Examples:
    >>> Group(name="News", channel="email", default="opt_out").receives(None)
    True
    >>> Group(name="News", channel="email").receives(State("pending", 0, "api"))
    False
"""

from __future__ import annotations

import logging
import time
import weakref
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import redis

from collector import wire
from collector.reader import Entry, profile_ids
from collector.scripts import lua
from collector.spool import append_now
from collector.versioned import Versioned
from journeys import suppression
from journeys.links import link_secret, token, verify
from journeys.spec import KEY
from profiles.store import profile_keys

__all__ = [
    "CHANGED",
    "CHANNELS",
    "EVENTS",
    "GROUPS",
    "REASONS",
    "SOURCES",
    "STATES",
    "VERSION",
    "Change",
    "Group",
    "State",
    "address_of",
    "apply_events",
    "cached_groups",
    "check",
    "confirm_url",
    "delete_group",
    "described",
    "exists",
    "groups",
    "link_parts",
    "parse_group",
    "preferences_url",
    "put_group",
    "resolved",
    "set_state",
    "states",
    "unsubscribe_all",
    "unsubscribe_url",
]

log = logging.getLogger("kairos.subscriptions")

GROUPS = "{subs}:groups"  # hash: key -> Group as JSON
VERSION = "{subs}:version"  # bumped on every change of a group (cached copies reload)
CHANNELS = ("email", "discord", "telegram", "webhook")
STATES = ("subscribed", "unsubscribed", "pending")
# What changed a state: the API, a tracked event, the preference page, a one-click unsubscribe,
# the double opt-in confirmation, a spam complaint from the provider.
SOURCES = ("api", "event", "preferences", "one_click", "confirm", "complaint")
EVENTS = {"Subscribed": "subscribed", "Unsubscribed": "unsubscribed"}  # tracked: property group
CHANGED = "Subscription Changed"
# Why ``check`` says not to send, in the order it looks:
REASONS = {
    "unknown_group": "no subscription group of that key",
    "channel_mismatch": "the group is for another channel",
    "no_address": "the person has no address on the channel (email, discord, telegram)",
    "suppressed": "the address is on the suppression list (bounce, complaint, manual)",
    "unsubscribed": "the person, or their address, unsubscribed from the group",
    "pending_confirmation": "double opt-in: the person has not confirmed yet",
    "not_subscribed": "an opt-in group the person never subscribed to",
}
_SUBSCRIBE = lua(__file__, "subscribe.lua")
_NAME = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Group(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A subscription group's definition (``PUT /v1/subscriptions/{key}``).

    Examples:
        >>> parse_group(b'{"name": "Chat", "channel": "discord", "double_opt_in": true}')
        Traceback (most recent call last):
        ValueError: $.double_opt_in: only for email groups (the confirmation is an email)
    """

    name: _NAME
    channel: Literal["email", "discord", "telegram", "webhook"]
    default: Literal["opt_in", "opt_out"] = "opt_in"
    double_opt_in: bool = False
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""

    def receives(self, state: State | None) -> bool:
        """Whether a person in ``state`` (None: never chose) may be sent this group's messages."""
        if state is None:
            return self.default == "opt_out"
        return state.state == "subscribed"


class State(msgspec.Struct, frozen=True):
    """One person's state in one group: what, when (ms), and what changed it.

    Examples:
        >>> State.parse(b"unsubscribed|1800000000000|one_click")
        State(state='unsubscribed', at=1800000000000, source='one_click')
        >>> State("pending", 5, "api").encoded()
        'pending|5|api'
    """

    state: str
    at: int
    source: str

    @classmethod
    def parse(cls, raw: bytes | str) -> State:
        text = raw.decode() if isinstance(raw, bytes) else raw
        state, at, source = text.split("|", 2)
        return cls(state, int(at), source)

    def encoded(self) -> str:
        return f"{self.state}|{self.at}|{self.source}"


_GROUP = msgspec.json.Decoder(Group)
_encode = msgspec.json.Encoder().encode


def parse_group(body: bytes) -> Group:
    """A definition from JSON; ``ValueError`` for a combination the types cannot refuse."""
    group = _GROUP.decode(body)
    if group.double_opt_in and group.channel != "email":
        raise ValueError("$.double_opt_in: only for email groups (the confirmation is an email)")
    return group


def put_group(client: redis.Redis, key: str, group: Group) -> tuple[bool, bool]:
    """Save ``group``: (created, changed)."""
    encoded = _encode(group)
    held = client.hget(GROUPS, key)
    if held == encoded:
        return False, False
    client.hset(GROUPS, key, encoded)
    client.incr(VERSION)
    return held is None, True


def delete_group(client: redis.Redis, key: str) -> bool:
    """Delete a group (people's states in it stay on their profiles, unused: ``check`` answers
    ``unknown_group`` for it); whether it existed."""
    gone = bool(client.hdel(GROUPS, key))
    if gone:
        client.incr(VERSION)
    return gone


def groups(client: redis.Redis) -> dict[str, Group]:
    return {k.decode(): _GROUP.decode(v) for k, v in client.hgetall(GROUPS).items()}


# One cached copy of the definitions per client (so per Redis: a test process talks to several).
_CACHES: weakref.WeakKeyDictionary[redis.Redis, Versioned[dict[str, Group]]] = (
    weakref.WeakKeyDictionary()
)


def _cache(client: redis.Redis) -> Versioned[dict[str, Group]]:
    found = _CACHES.get(client)
    if found is None:
        found = _CACHES[client] = Versioned(VERSION, {})
    return found


def cached_groups(client: redis.Redis) -> dict[str, Group]:
    """The definitions, from this process's copy while their version has not moved."""
    return _cache(client).get(client, groups)


# -- each person's state --


def states(client: redis.Redis, pid: str) -> dict[str, State]:
    """The person's state in every group they ever chose in."""
    raw = client.hgetall(profile_keys(pid)[8])
    return {k.decode(): State.parse(v) for k, v in raw.items()}


def _resolved(client: redis.Redis, pid: str) -> str:
    """Where ``pid``'s data is now (a merge leaves a pointer behind)."""
    for _ in range(16):
        target = client.hget(profile_keys(pid)[0], "merged_into")
        if target is None:
            return pid
        pid = target.decode()
    return pid


def address_of(client: redis.Redis, pid: str) -> str | None:
    """The person's email address: the ``email`` trait, else an ``email:`` identity."""
    keys = profile_keys(pid)
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys[0], "t:email")
    pipe.smembers(keys[4])
    trait, ids = pipe.execute()
    if trait:
        value = msgspec.json.decode(trait)
        if isinstance(value, str) and "@" in value:
            return value.strip()
    found = sorted(i.decode()[6:] for i in ids if i.startswith(b"email:"))
    return found[0] if found else None


def _ids(client: redis.Redis, pid: str) -> dict[str, str]:
    """The identities the person's "Subscription Changed" events go out with."""
    keys = profile_keys(pid)
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys[0], "user_id")
    pipe.smembers(keys[4])
    user, ids = pipe.execute()
    found = {"user_id": user.decode()} if user else {}
    anonymous = sorted(i.decode()[13:] for i in ids if i.startswith(b"anonymous_id:"))
    if anonymous:
        found["anonymous_id"] = anonymous[0]
    return found or {"anonymous_id": f"profile-{pid}"}


class Change(msgspec.Struct, frozen=True):
    """What ``set_state`` did: the state held before (None: none), and whether it changed."""

    group: str
    before: State | None
    after: State
    changed: bool


def set_state(client: redis.Redis, pid: str, key: str, state: str, source: str,
              at: int | None = None, address: str | None = None,
              spool: bool = True) -> Change:  # fmt: skip
    """Set the person's state in group ``key`` (if no newer change is held), keep the
    suppression list in step with it (``address``: the person's, looked up if not given), and
    say it in the spool ("Subscription Changed") when it changed."""
    assert state in STATES and source in SOURCES, (state, source)
    at = _now() if at is None else at
    pid = _resolved(client, pid)
    wanted = State(state, at, source)
    applied, held = _SUBSCRIBE(client, [profile_keys(pid)[8]], [key, wanted.encoded(), at])
    before = State.parse(held) if held else None
    changed = bool(applied) and (before is None or before.state != state)
    if changed:
        defined = cached_groups(client)
        group = defined.get(key)
        address = address if address is not None else address_of(client, pid)
        if group is not None and address and group.channel == "email":
            if state == "unsubscribed":
                suppression.unsubscribe_groups(client, "email", address, [key], at)
            elif state == "subscribed":
                others = [k for k, g in defined.items() if g.channel == "email" and k != key]
                suppression.resubscribe_group(client, "email", address, key, others)
        if spool:
            append_now(client, [_changed_event(client, pid, key, wanted)])
    return Change(key, before, wanted, changed)


def unsubscribe_all(client: redis.Redis, pid: str, channel: str, source: str) -> list[Change]:
    """Unsubscribe the person from every group of ``channel``, and keep their address off all
    of them, those made later too (``g:*`` on the suppression list)."""
    pid = _resolved(client, pid)
    at = _now()
    address = address_of(client, pid) if channel == "email" else None
    changes = [set_state(client, pid, key, "unsubscribed", source, at, address="")
               for key, group in sorted(cached_groups(client).items())
               if group.channel == channel]  # fmt: skip
    if address:
        suppression.unsubscribe_groups(client, channel, address, ["*"], at)
    return changes


def _changed_event(client: redis.Redis, pid: str, key: str, state: State) -> wire.Message:
    ids = _ids(client, pid)
    stamp = datetime.fromtimestamp(state.at / 1000, UTC)
    properties = {"group": key, "state": state.state, "source": state.source, "profile_id": pid}
    return wire.Track(
        event=CHANGED, user_id=ids.get("user_id"), anonymous_id=ids.get("anonymous_id"),
        # The same change said twice (a replayed event) is one message: the spool's dedup.
        message_id=f"subscription-changed-{pid}-{key}-{state.at}-{state.state}",
        timestamp=stamp, received_at=datetime.now(UTC),
        properties=msgspec.Raw(msgspec.json.encode(properties)),
        context=msgspec.Raw(b'{"library":{"name":"kairos-subscriptions"}}'),
    )  # fmt: skip


def apply_events(client: redis.Redis, entries: list[Entry], wait: float = 10.0,
                 pending: list[tuple[str, str]] | None = None) -> int:  # fmt: skip
    """Apply the tracked "Subscribed" / "Unsubscribed" events (property ``group``) of a spool
    batch to their people, at the events' own times; how many were applied. Called by the
    journeys worker for every batch (idempotent: a replay finds the same change held).
    ``pending`` gets the (person, group) of each double opt-in that now awaits confirmation:
    the worker sends those their confirmation email (only on the change, so not on a replay)."""
    wanted = [e for e in entries if e.kind == "events"
              and (b"Subscribed" in e.payload or b"Unsubscribed" in e.payload)]  # fmt: skip
    if not wanted:
        return 0
    pids = profile_ids(client, wanted, wait)
    defined = cached_groups(client)
    applied = 0
    for entry in wanted:
        for msg, pid in zip(entry.messages(), pids.get(entry.ref, [])):
            if not isinstance(msg, wire.Track) or msg.event not in EVENTS or not pid:
                continue
            state = EVENTS[msg.event]
            key = wire.as_dict(msg.properties).get("group")
            if not isinstance(key, str) or key not in defined:
                log.info("subscription event for no group", extra={"group": str(key)[:64]})
                continue
            if state == "subscribed" and defined[key].double_opt_in:
                state = "pending"  # confirmed only by the link in the confirmation email
            at = int(wire.event_time(msg).timestamp() * 1000)
            change = set_state(client, pid, key, state, "event", at)
            if pending is not None and state == "pending" and change.changed:
                pending.append((pid, key))
            applied += 1
    return applied


# -- the send-time check --


def check(client: redis.Redis, pid: str, group_key: str | None, channel: str,
          address: str | None) -> str | None:  # fmt: skip
    """May a message of group ``group_key`` (None: transactional, only the suppression list
    applies) go to person ``pid`` at ``address`` on ``channel``? None if so, else a reason of
    ``REASONS``. One pipeline of reads (the group definitions are cached in process); frequency
    caps and quiet hours are the sending path's."""
    cache = _cache(client)
    keys = profile_keys(pid)
    digest = suppression.address_hash(channel, address) if address else None
    fields = ["block", f"g:{group_key}", "g:*"] if group_key else ["block"]
    pipe = client.pipeline(transaction=False)
    pipe.get(VERSION)
    pipe.hget(keys[0], "merged_into")
    if group_key:
        pipe.hget(keys[8], group_key)
    if digest:
        pipe.hmget(f"{{sup}}:a:{digest}", fields)
    replies = pipe.execute()
    version, moved = replies[0], replies[1]
    held = replies[2] if group_key else None
    marks = replies[-1] if digest else [None] * len(fields)
    defined = cache.update(version, groups(client)) if cache.stale(version) else cache.value
    group = defined.get(group_key) if group_key else None
    if group_key and group is None:
        return "unknown_group"
    if group is not None and group.channel != channel:
        return "channel_mismatch"
    if not address and channel != "webhook":
        return "no_address"
    if marks[0] is not None:
        return "suppressed"
    if group is None:
        return None
    if any(m is not None for m in marks[1:]):
        return "unsubscribed"
    if moved is not None:  # merged away since the message was planned: ask where it went
        held = client.hget(profile_keys(_resolved(client, moved.decode()))[8], group_key)
    state = State.parse(held) if held else None
    if group.receives(state):
        return None
    if state is None:
        return "not_subscribed"
    return {"pending": "pending_confirmation"}.get(state.state, "unsubscribed")


# -- signed links --


def _base(public_url: str) -> str:
    return public_url.rstrip("/")


def unsubscribe_url(public_url: str, secret: bytes, pid: str, group: str | None) -> str:
    """The one-click unsubscribe link of a message (``List-Unsubscribe``; RFC 8058 POSTs to it):
    from ``group``, or from every email group when None (a message without a group).

    Examples:
        >>> unsubscribe_url("https://k.example/", b"s", "p_1", "news")[:35]
        'https://k.example/v1/unsubscribe/dW'
    """
    return f"{_base(public_url)}/v1/unsubscribe/{token(secret, 'unsubscribe', pid, group or '*')}"


def preferences_url(public_url: str, secret: bytes, pid: str) -> str:
    """The person's preference page (every group, with toggles)."""
    return f"{_base(public_url)}/v1/preferences/{token(secret, 'preferences', pid)}"


def confirm_url(public_url: str, secret: bytes, pid: str, group: str) -> str:
    """The double opt-in confirmation link."""
    return f"{_base(public_url)}/v1/subscriptions/confirm/{token(secret, 'confirm', pid, group)}"


def link_parts(client: redis.Redis, found: str, kind: str) -> list[str] | None:
    """The parts after ``kind`` of a token signed by this engine for that kind of link; None
    for a forged, mangled or other kind of token (the pages answer 404 alike)."""
    parts = verify(link_secret(client), found)
    if not parts or parts[0] != kind:
        return None
    size = {"unsubscribe": 3, "preferences": 2, "confirm": 3}[kind]
    if len(parts) != size or not all(parts[1:]):
        return None
    if size == 3 and parts[2] != "*" and not KEY.fullmatch(parts[2]):
        return None
    return parts[1:]


def exists(client: redis.Redis, pid: str) -> bool:
    """Whether the profile is there (an erased person's links lead nowhere)."""
    keys = profile_keys(pid)
    pipe = client.pipeline(transaction=False)
    pipe.hexists(keys[0], "first_seen")
    pipe.exists(keys[4])
    return any(pipe.execute())


def resolved(client: redis.Redis, pid: str) -> str:
    return _resolved(client, pid)


def _now() -> int:
    return int(time.time() * 1000)


def described(group: Group, state: State | None) -> dict[str, Any]:
    """A person's standing in one group, as the API shows it."""
    shown: dict[str, Any] = {"name": group.name, "channel": group.channel,
                             "receives": group.receives(state)}  # fmt: skip
    if state is None:
        return {**shown, "state": None, "at": None, "source": None}
    return {**shown, "state": state.state, "at": state.at, "source": state.source}
