"""Recording a change in the audit log: who (the request's principal), how (``api``,
``dashboard``, ``cli``), from where (the client IP), what (the resource, before and after).

A route records after its change succeeded and before it answers::

    before = await audit.stored(request, "placement", key)
    changed = await run_in_threadpool(put_placement, client, key, placement)
    await audit.changed(request, "placement", key, before)  # reads after, records if it differs

or, where the definition is not one stored in a hash (a broadcast's status, an erasure)::

    await audit.record(request, "broadcast", key, "pause", {"status": "sending"},
                       {"status": "paused"})

An entry is appended to a Redis stream (``collector.audit``) and so is durable when the
change's 200 goes out; the sink moves it into ClickHouse within a second or two. If the append
fails, the change has been made but the answer is a 503 ``audit_unavailable`` that says so (and
the entry goes to the error log): a caller never gets a 200 for a change the log lacks. A PUT
that changes nothing is not recorded. The config file's definitions, installed by the workers
at start, are recorded with ``from_config`` (actor ``config:file``, via ``config``); a CLI
command that writes Redis itself records with ``record_local`` (via ``cli``).
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Callable
from typing import Any

import msgspec
import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from collector.audit import append, append_async, entry
from decisions.placements import DEFS as PLACEMENTS
from edge.api.auth import principal
from edge.api.responses import Problem
from journeys.broadcasts import DEFS as BROADCASTS
from journeys.emails import DEFS as TEMPLATES
from journeys.store import DEFS as JOURNEYS
from journeys.subscriptions import GROUPS
from profiles.membership import DEFS as SEGMENTS
from profiles.products import ITEMS

__all__ = ["CLI_AGENT", "STORED", "address_of", "changed", "changed_items", "from_config", "record",
           "record_local", "stored", "via_of"]  # fmt: skip

log = logging.getLogger("kairos.audit")

CLI_AGENT = "kairos-cli/"  # how the ``kairos`` CLI's User-Agent starts
# Where each resource kept as one JSON value in a hash keeps its definition.
STORED = {
    "placement": PLACEMENTS,
    "segment": SEGMENTS,
    "journey": JOURNEYS,
    "template": TEMPLATES,
    "broadcast": BROADCASTS,
    "subscription_group": GROUPS,
    "catalog_item": ITEMS,
}


def via_of(request: Request) -> str:
    """``dashboard`` for the dashboard's pages, ``cli`` for the ``kairos`` CLI, else ``api``."""
    if request.url.path.startswith("/dashboard"):
        return "dashboard"
    return "cli" if request.headers.get("user-agent", "").startswith(CLI_AGENT) else "api"


def address_of(request: Request) -> str:
    """The client's IP: the peer's, or the one a trusted proxy forwards for (as the limits and
    the key checks read it, ``edge.api.limits``)."""
    forwarded = [v for n, v in request.scope["headers"] if n == b"x-forwarded-for"]
    found = request.state.limits.client_ip(request.scope, forwarded) if forwarded else None
    client = request.scope.get("client")
    return str(found or (client[0] if client else ""))


def _decoded(raw: bytes | None) -> Any:
    return None if raw is None else msgspec.json.decode(raw)


async def stored(request: Request, resource: str, key: str) -> Any:
    """The stored definition of ``resource`` ``key`` as JSON values (None: there is none)."""
    raw = await run_in_threadpool(request.state.redis_sync.hget, STORED[resource], key)
    return _decoded(raw)


async def changed(request: Request, resource: str, key: str, before: Any) -> None:
    """Record the change from ``before`` to what is stored now: create, update or delete;
    nothing if they are the same."""
    after = await stored(request, resource, key)
    action = "delete" if after is None else "create" if before is None else "update"
    await record(request, resource, key, action, before, after)


async def record(request: Request, resource: str, key: str, action: str, before: Any = None,
                 after: Any = None, actor: str = "") -> None:  # fmt: skip
    """Append the entry for a change the request made; nothing when ``before`` and ``after``
    are the same definition. ``actor``: who, where the request has no principal (a provider's
    signed webhook). ``Problem`` 503 if the log cannot take it."""
    if before is not None and before == after:
        return
    who = principal(request)
    actor = who.actor if who else actor or "anonymous"
    found = entry(actor, via_of(request), address_of(request), action, resource, key, before,
                  after)  # fmt: skip
    try:
        await append_async(request.state.redis, found)
    except (redis.RedisError, OSError) as exc:
        log.error("audit entry not written", extra={"entry": msgspec.json.encode(found).decode(),
                                                    "error": str(exc)})  # fmt: skip
        raise Problem(503, "audit_unavailable", f"the {resource} {action} was made, but its "
                      f"audit log entry could not be written ({exc}); retry once Redis "
                      "answers", headers={"Retry-After": "5"}) from None  # fmt: skip


def record_local(client: redis.Redis, resource: str, key: str, action: str, before: Any = None,
                 after: Any = None, actor: str = "", via: str = "cli") -> None:  # fmt: skip
    """Record a change made on this machine without the API (blocking): the config file's
    installs, or a CLI command that writes Redis itself. ``actor`` defaults to
    ``cli:<OS user>``; the address is this host's name. Redis errors propagate."""
    if before is not None and before == after:
        return
    actor = actor or f"cli:{_os_user()}"
    append(client, entry(actor, via, socket.gethostname(), action, resource, key, before, after))


Items = dict[str, Any]  # id -> item, as JSON values


def changed_items(ids: list[str], was: list[Any], now: list[Any]) -> tuple[Items, Items]:
    """The catalog items a bulk upsert changed, before and after, by id (an item new: null
    before); ``was`` and ``now`` are the items of ``ids`` (None: absent) around the upsert."""
    before: Items = {}
    after: Items = {}
    for item_id, old, new in zip(ids, was, now):
        if old != new:
            before[item_id] = msgspec.to_builtins(old)
            after[item_id] = msgspec.to_builtins(new)
    return before, after


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


def from_config(client: redis.Redis, resource: str, key: str, apply: Callable[[], bool]) -> bool:
    """Install a definition from the config file (``apply`` saves it and says whether it
    changed) and record the change; whether it changed."""
    before = _decoded(client.hget(STORED[resource], key))
    if not apply():
        return False
    after = _decoded(client.hget(STORED[resource], key))
    action = "create" if before is None else "update"
    record_local(client, resource, key, action, before, after, "config:file", "config")
    return True
