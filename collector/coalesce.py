"""Efficient Redis pipelines: ``Coalescer`` (asyncio) sends the commands and scripts of one
event-loop tick as one pipeline; ``Pipeline`` (blocking) streams a worker's commands.

redis-py spends most of an awaited command's cost in Python: packing arguments, taking a pooled
connection, a round trip per command, reading the reply. Requests that arrive together therefore
share one write and one round trip, packed and parsed by hiredis in C; each caller still gets its
own result or error. Nothing waits for a timer: the pipeline leaves on the next loop iteration.
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

__all__ = ["Coalescer", "Pipeline"]


# (the packed command, the script it runs if any, the caller's future)
_Call = tuple[list[bytes], "Script | None", "asyncio.Future[Any]"]


class Coalescer:
    """Commands and Lua scripts for many coroutines over one pipelined connection (asyncio).

    The connection is its own, opened on first use and again after a failure: what is queued
    during one event-loop tick goes out in one write, replies are parsed by hiredis (in C) as
    they arrive and resolve their callers' futures in order. No pool, no lock, no task per
    command. ``timeout``: seconds a write may wait for its replies; past it, every caller
    waiting on the connection gets TimeoutError and the connection is dropped (a stuck Redis
    must not hold requests).
    """

    def __init__(self, client: redis.asyncio.Redis, timeout: float | None = None):
        self.client = client  # its settings say where Redis is; callers use it for the rest
        self.timeout = timeout
        self._pending: list[_Call] = []
        self._before: list[Callable[[], None]] = []  # see ``before_flush``
        self._scheduled = False
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[None] | None = None
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
        return self._queue(packed, script)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command (``"HGETALL", key``) in the next pipeline."""
        return self._queue([hiredis.pack_command(args)], None)

    def before_flush(self, produce: Callable[[], None]) -> None:
        """Call ``produce`` once, just before the next pipeline leaves, to queue its commands
        then: what many callers add to one command (the decision log's one XADD per tick)
        joins the reads queued in the same tick, without a loop iteration of its own."""
        self._before.append(produce)
        if not self._scheduled:
            self._scheduled = True
            self._running().call_soon(self._flush)

    def future(self) -> asyncio.Future[Any]:
        """A new future of the loop this pipeline runs in."""
        return self._running().create_future()

    def _running(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():  # first use, or a new asyncio.run (tests)
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            connection.close()
            await asyncio.wait_for(asyncio.shield(connection.lost), 5.0)

    def _queue(
        self, packed: list[bytes], script: Script | None, future: asyncio.Future[Any] | None = None
    ) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None or loop.is_closed():  # (``_running``, inline: a call per command)
            loop = self._running()
        future = future or loop.create_future()
        self._pending.append((packed, script, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        if self._before:  # while still scheduled: what they queue goes out now
            before, self._before = self._before, []
            for produce in before:
                produce()
        self._scheduled = False
        connection = self._connection
        if connection is None or connection.closed:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            return  # sent once connected
        batch, self._pending = self._pending, []
        last = connection.send(batch, self._script_done)
        if self.timeout is not None:
            self._running().call_later(self.timeout, connection.expire, last)

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.timeout or 10.0):
                self._connection = await _Connection.open(self.client)
        except Exception as exc:  # refused, unreachable, slow, wrong password: tell the callers
            batch, self._pending = self._pending, []
            error = exc if isinstance(exc, redis.RedisError | TimeoutError) else (
                redis.ConnectionError(f"cannot connect to Redis: {exc}"))  # fmt: skip
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
        finally:
            self._connecting = None
        if self._pending and not self._scheduled:
            self._flush()

    def _script_done(self, call: _Call, reply: asyncio.Future[Any]) -> None:
        """Relay a script's reply; when Redis lost the script (a restart), load it and retry."""
        packed, script, future = call
        if future.done():
            return
        error = None if reply.cancelled() else reply.exception()
        if isinstance(error, NoScriptError) and script is not None:
            asyncio.ensure_future(self._reload(call)).add_done_callback(_quiet)
        elif reply.cancelled():
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(reply.result())

    async def _reload(self, call: _Call) -> None:
        packed, script, future = call
        assert script is not None
        try:
            await self.command("SCRIPT", "LOAD", script.source)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        self._queue(packed, None, future)  # no second reload: an error now is the caller's


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
    async def open(cls, client: redis.asyncio.Redis) -> _Connection:
        settings = client.connection_pool.connection_kwargs
        loop = asyncio.get_running_loop()
        if "path" in settings:
            _, connection = await loop.create_unix_connection(cls, settings["path"])
        else:
            secure = client.connection_pool.connection_class.__name__ == "SSLConnection"
            _, connection = await loop.create_connection(
                cls, settings["host"], settings["port"],
                ssl=ssl.create_default_context() if secure else None,
            )  # fmt: skip
        setup: list[tuple[Any, ...]] = []
        if settings.get("password"):
            user = settings.get("username")
            setup.append(("AUTH", user, settings["password"]) if user else
                         ("AUTH", settings["password"]))  # fmt: skip
        if settings.get("db"):
            setup.append(("SELECT", settings["db"]))
        for command in setup:
            future = loop.create_future()
            connection.waiting.append(future)
            assert connection.transport is not None
            connection.transport.write(hiredis.pack_command(command))
            await future
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, batch: list[_Call], script_done: Any) -> asyncio.Future[Any]:
        """Write ``batch``; returns the future of its last reply."""
        assert self.transport is not None
        waiting = self.waiting
        for packed, script, future in batch:
            if script is None:
                waiting.append(future)
            else:  # a script's reply passes through ``script_done`` (NOSCRIPT: reload, retry)
                reply = future.get_loop().create_future()
                reply.add_done_callback(functools.partial(script_done, (packed, script, future)))
                waiting.append(reply)
        self.transport.writelines([part for packed, _, _ in batch for part in packed])
        return waiting[-1]

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


class Pipeline:
    """A blocking pipeline that streams: commands go to Redis in chunks while more are queued,
    replies are read at ``execute``. Redis works on the first commands while Python prepares
    the next, and packing is done by hiredis, not in Python.

    A script's first call in each round trip is preceded by its ``SCRIPT LOAD`` (whose reply
    is not returned), so scripts never meet NOSCRIPT here; an error reply is returned in its
    place.
    """

    def __init__(self, client: redis.Redis, chunk: int = 256):
        self.client = client
        self.chunk = chunk
        self._connection: Any = None
        self._buffer: list[bytes] = []
        self._sent = 0
        self._loads: list[int] = []  # positions of this round's SCRIPT LOADs (replies dropped)
        self._loaded: set[str] = set()

    def __len__(self) -> int:
        return self._sent + len(self._buffer) - len(self._loads)

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        if script.sha not in self._loaded:
            self._loaded.add(script.sha)
            self._loads.append(self._sent + len(self._buffer))
            self.command("SCRIPT", "LOAD", script.source)
        self.command("EVALSHA", script.sha, len(keys), *keys, *args)

    def command(self, *args: Any) -> None:
        self._buffer.append(hiredis.pack_command(args))
        if len(self._buffer) >= self.chunk:
            self._send()

    def execute(self) -> list[Any]:
        if not self._buffer and not self._sent:
            return []
        self._send()
        connection, self._connection = self._connection, None
        count, self._sent = self._sent, 0
        loads, self._loads, self._loaded = set(self._loads), [], set()
        try:
            replies: list[Any] = []
            for position in range(count):
                try:
                    reply = connection.read_response()
                except redis.ResponseError as exc:
                    reply = exc
                if position not in loads:
                    replies.append(reply)
            return replies
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self.client.connection_pool.release(connection)

    def _send(self) -> None:
        if not self._buffer:
            return
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        try:
            self._connection.send_packed_command([b"".join(self._buffer)], check_health=False)
        except BaseException:
            self._connection.disconnect()
            self.client.connection_pool.release(self._connection)
            self._connection, self._buffer, self._sent = None, [], 0
            self._loads, self._loaded = [], set()
            raise
        self._sent += len(self._buffer)
        self._buffer = []
