"""``Coalescer``: the commands and scripts of one event-loop tick go to Redis as one pipeline.

redis-py spends most of an awaited command's cost in Python: packing arguments, taking a pooled
connection, a round trip per command, reading the reply. Requests that arrive together therefore
share one write and one round trip, packed and parsed by hiredis in C; each caller still gets its
own result or error. Nothing waits for a timer: the pipeline leaves on the next loop iteration.

On a Redis Cluster there is one such connection per master: each command goes to the master of
its key's slot (a script's, of its first key: our scripts keep their keys in one slot), and a
``MOVED`` or ``ASK`` reply sends it on to the node named, so that slots can migrate under live
traffic without a failed request (``collector.slots``).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from collector.scripts import Script
from collector.slots import Address, SlotTable, redirect_of

__all__ = ["Coalescer"]

_HOPS = 5  # redirects one command may follow (a migration moves a slot once)
_ASKING = hiredis.pack_command(("ASKING",))


class _Call:
    """One caller's command: what is written, the script it runs if any, where its answer goes."""

    __slots__ = ("future", "hops", "key", "packed", "reloaded", "script")

    def __init__(
        self, packed: list[bytes], script: Script | None, key: Any, future: asyncio.Future[Any]
    ):
        self.packed, self.script, self.key, self.future = packed, script, key, future
        self.hops, self.reloaded = 0, False


class Coalescer:
    """Commands and Lua scripts for many coroutines over pipelined connections (asyncio).

    Each connection is its own, opened on first use and again after a failure: what is queued
    during one event-loop tick goes out in one write, replies are parsed by hiredis (in C) as
    they arrive and resolve their callers' futures in order. No pool, no lock, no task per
    command. ``timeout``: seconds a write may wait for its replies; past it, every caller
    waiting on the connection gets TimeoutError and the connection is dropped (a stuck Redis
    must not hold requests).
    """

    def __init__(self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
                 timeout: float | None = None):  # fmt: skip
        self.client = client  # its settings say where Redis is; callers use it for the rest
        self.timeout = timeout
        self._cluster = isinstance(client, redis.asyncio.RedisCluster)
        self._nodes: dict[Address | None, _Node] = {}
        # A single server: its one node, and the short path for plain commands (no _Call, no
        # routing: a few µs per command count on the decide path).
        self._single = None if self._cluster else self._node(None)
        self._slots: SlotTable | None = None
        self._unrouted: list[_Call] = []  # cluster: waiting for the slot table
        self._loading: asyncio.Future[None] | None = None
        self.redirects = 0  # MOVED and ASK replies followed (a slot migration in progress)
        self._dirty: dict[_Node, None] = {}  # nodes with commands to write this tick, in order
        self._before: list[Callable[[], None]] = []  # see ``before_flush``
        self._scheduled = False
        # The loop it runs in, kept: asyncio.get_running_loop() costs a getpid() system call
        # (its fork check), a few per request on the decide path.
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, script: Script, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Run ``script`` in the next pipeline; the future holds its reply or error.

        The last of ``args`` must be bytes (typically the large payload): it goes out as its own
        buffer, uncopied.
        """
        *small, large = args
        head = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *small))
        count, _, rest = head.partition(b"\r\n")
        packed = [b"*%d\r\n" % (int(count[1:]) + 1), rest, b"$%d\r\n" % len(large), large, b"\r\n"]
        return self._send(_Call(packed, script, keys[0] if keys else None, self.future()))

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command (``"HGETALL", key``: the key second) in the next pipeline."""
        single = self._single
        if single is not None:
            loop = self._loop
            if loop is None or loop.is_closed():  # (``_running``, inline: a call per command)
                loop = self._running()
            future = loop.create_future()
            single.pending.append(([hiredis.pack_command(args)], future))
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush)
            return future
        key = args[1] if len(args) > 1 else None
        return self._send(_Call([hiredis.pack_command(args)], None, key, self.future()))

    def command_on(self, key: Any, *args: Any) -> asyncio.Future[Any]:
        """Send a command that names no key (``"WAIT", 1, 500``) to the server of ``key``, on
        the connection that carries ``key``'s commands."""
        return self._send(_Call([hiredis.pack_command(args)], None, key, self.future()))

    def before_flush(self, produce: Callable[[], None]) -> None:
        """Call ``produce`` once, just before the next pipeline leaves, to queue its commands
        then: what many callers add to one command (the decision log's one XADD per tick)
        joins the reads queued in the same tick, without a loop iteration of its own."""
        self._before.append(produce)
        self._schedule()

    def future(self) -> asyncio.Future[Any]:
        """A new future of the loop this pipeline runs in."""
        return self._running().create_future()

    def _running(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():  # first use, or a new asyncio.run (tests)
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def aclose(self) -> None:
        """Close the connections (a command after this opens them again)."""
        await asyncio.gather(*(node.aclose() for node in self._nodes.values()))

    def _queue(self, node: _Node, packed: list[bytes], reply: asyncio.Future[Any]) -> None:
        node.pending.append((packed, reply))
        if self._single is None:
            self._dirty[node] = None
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._running().call_soon(self._flush)

    def _flush(self) -> None:
        if self._before:  # while still scheduled: what they queue goes out now
            before, self._before = self._before, []
            for produce in before:
                produce()
        self._scheduled = False
        if self._single is not None:
            self._single.flush()
            return
        dirty, self._dirty = self._dirty, {}
        for node in dirty:
            node.flush()

    def _send(self, call: _Call) -> asyncio.Future[Any]:
        if not self._cluster:  # a plain command's reply goes straight to its caller
            self._queue(self._node(None), call.packed,
                        self._relay(call, None) if call.script else call.future)  # fmt: skip
        elif self._slots is None:
            self._unrouted.append(call)
            self._load_slots()
        else:
            try:
                address = self._slots.node(call.key)
            except LookupError as exc:
                call.future.set_exception(redis.exceptions.ClusterDownError(str(exc)))
                return call.future
            self._queue(self._node(address), call.packed, self._relay(call, address))
        return call.future

    def _node(self, address: Address | None) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = _Node(self.client, address, self.timeout)
        return node

    def _relay(self, call: _Call, address: Address | None) -> asyncio.Future[Any]:
        """A future for the reply of ``call`` from node ``address``, which passes the reply on,
        or acts on it: NOSCRIPT (Redis lost the script: load it there and retry), MOVED / ASK
        (resend to the node named), TRYAGAIN (a slot in migration: resend shortly)."""
        reply = self.future()
        reply.add_done_callback(functools.partial(self._replied, call, address))
        return reply

    def _replied(self, call: _Call, address: Address | None, reply: asyncio.Future[Any]) -> None:
        future = call.future
        if future.done():
            return
        if reply.cancelled():
            future.cancel()
            return
        error = reply.exception()
        if error is None:
            future.set_result(reply.result())
        elif isinstance(error, NoScriptError) and call.script and not call.reloaded:
            call.reloaded = True  # no second reload: an error then is the caller's
            task = asyncio.ensure_future(self._reload(call, address))
            task.add_done_callback(_quiet)
        elif self._cluster and call.hops < _HOPS and self._redirected(call, error):
            call.hops += 1
        else:
            if isinstance(error, redis.ConnectionError | TimeoutError) and self._cluster:
                self._load_slots()  # a master may have failed over: ask again who serves what
            future.set_exception(error)

    def _redirected(self, call: _Call, error: BaseException) -> bool:
        redirect = redirect_of(error)
        if redirect is not None and self._slots is not None:
            self.redirects += 1
            node = self._node(redirect.address)
            if redirect.moved:
                self._slots.move(redirect.slot, redirect.address)
                self._load_slots()  # a migration moves many slots: learn them all at once
            else:  # ASK: this command only, right after ASKING on the same connection
                asking = self.future()
                asking.add_done_callback(_quiet)
                self._queue(node, [_ASKING], asking)
            self._queue(node, call.packed, self._relay(call, redirect.address))
            return True
        if str(error).startswith("TRYAGAIN"):  # a multi-key command mid-migration
            call.future.get_loop().call_later(0.05, self._send, call)
            return True
        return False

    async def _reload(self, call: _Call, address: Address | None) -> None:
        assert call.script is not None
        node = self._node(address)
        loaded = self.future()
        load = ("SCRIPT", "LOAD", call.script.source)
        self._queue(node, [hiredis.pack_command(load)], loaded)  # type: ignore[arg-type]
        try:
            await loaded
        except Exception as exc:
            if not call.future.done():
                call.future.set_exception(exc)
            return
        self._queue(node, call.packed, self._relay(call, address))

    def _load_slots(self) -> None:
        """Read the slot table (again) in the background; calls wait for the first one."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._read_slots())

    async def _read_slots(self) -> None:
        assert isinstance(self.client, redis.asyncio.RedisCluster)
        known = self._slots.addresses if self._slots else []
        startup = [(n.host, n.port) for n in self.client.nodes_manager.startup_nodes.values()]
        failure: Exception = redis.ConnectionError("no Redis Cluster node to ask")
        try:
            for address in [*known, *(a for a in startup if a not in known)]:
                try:
                    async with asyncio.timeout(self.timeout or 10.0):
                        connection = await _Connection.open(self.client, address)
                        try:
                            reply = await connection.call(("CLUSTER", "SLOTS"))
                        finally:
                            connection.close()
                    self._slots = SlotTable.parse(reply, address)
                    break
                except (OSError, redis.RedisError, TimeoutError) as exc:
                    failure = exc
        finally:
            self._loading = None
        calls, self._unrouted = self._unrouted, []
        for call in calls:
            if self._slots is not None:
                self._send(call)
            elif not call.future.done():
                call.future.set_exception(failure)


class _Node:
    """The pipelined connection to one Redis server, and what waits to be written to it."""

    def __init__(self, client: Any, address: Address | None, timeout: float | None):
        self.client, self.address, self.timeout = client, address, timeout
        self.pending: list[tuple[list[bytes], asyncio.Future[Any]]] = []
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[None] | None = None

    def flush(self) -> None:
        connection = self._connection
        if connection is None or connection.closed:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            return  # sent once connected
        batch, self.pending = self.pending, []
        if batch:
            last = connection.send(batch)
            if self.timeout is not None:
                last.get_loop().call_later(self.timeout, connection.expire, last)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            connection.close()
            await asyncio.wait_for(asyncio.shield(connection.lost), 5.0)

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.timeout or 10.0):
                self._connection = await _Connection.open(self.client, self.address)
        except Exception as exc:  # refused, unreachable, slow, wrong password: tell the callers
            batch, self.pending = self.pending, []
            error = exc if isinstance(exc, redis.RedisError | TimeoutError) else (
                redis.ConnectionError(f"cannot connect to Redis: {exc}"))  # fmt: skip
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(error)
        finally:
            self._connecting = None
        if self.pending:
            self.flush()


class _Connection(asyncio.Protocol):
    """One Redis connection speaking RESP2, replies parsed by hiredis, in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=redis.ResponseError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.failure: Exception | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, client: Any, address: Address | None) -> _Connection:
        """To ``address`` (a cluster node) or, for None, to the server ``client`` is for; with
        the client's password, database and TLS."""
        if address is None:
            settings = client.connection_pool.connection_kwargs
            connection_class = client.connection_pool.connection_class
        else:
            settings = {**client.connection_kwargs, "host": address[0], "port": address[1]}
            connection_class = settings.get("connection_class")
        loop = asyncio.get_running_loop()
        if "path" in settings:
            _, connection = await loop.create_unix_connection(cls, settings["path"])
        else:
            secure = getattr(connection_class, "__name__", "") == "SSLConnection"
            _, connection = await loop.create_connection(
                cls, settings["host"], settings["port"],
                ssl=ssl.create_default_context() if secure else None,
            )  # fmt: skip
        if settings.get("password"):
            user = settings.get("username")
            await connection.call(("AUTH", user, settings["password"]) if user else
                                  ("AUTH", settings["password"]))  # fmt: skip
        if settings.get("db"):
            await connection.call(("SELECT", settings["db"]))
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def call(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        """One command on its own (setting up, asking for the slot table)."""
        future = asyncio.get_running_loop().create_future()
        self.send([([hiredis.pack_command(command)], future)])
        return future

    def send(self, batch: list[tuple[list[bytes], asyncio.Future[Any]]]) -> asyncio.Future[Any]:
        """Write ``batch``; returns the future of its last reply."""
        assert self.transport is not None
        self.waiting.extend(reply for _, reply in batch)
        self.transport.writelines([part for packed, _ in batch for part in packed])
        return self.waiting[-1]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while (reply := self.reader.gets()) is not False:
            future = waiting.popleft()
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(reply, redis.ResponseError):
                if str(reply).startswith("NOSCRIPT"):
                    reply = NoScriptError(str(reply))
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def expire(self, last: asyncio.Future[Any]) -> None:
        """Called ``timeout`` after a write: if its replies have not all come, give up on the
        connection (the replies still due would arrive out of step with new commands)."""
        if not last.done() and not self.closed:
            self.failure = TimeoutError("Redis did not answer in time")
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        error = self.failure or redis.ConnectionError(f"connection to Redis lost: {exc}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # errors went to the callers; do not log them again
