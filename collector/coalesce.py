"""Efficient Redis pipelines: ``Coalescer`` (asyncio) sends the commands and scripts of one
event-loop tick as one pipeline; ``Pipeline`` (blocking) streams a worker's commands.

redis-py spends most of an awaited command's cost in Python: packing arguments, a round trip per
command, reading the reply. Requests that arrive together therefore share one write and one
round trip, packed by hiredis in C; each caller still gets its own result or error. Nothing waits
for a timer: the pipeline leaves on the next loop iteration.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import hiredis
import redis
import redis.asyncio
from redis.exceptions import NoScriptError

__all__ = ["Coalescer", "Pipeline", "Script"]


class Script:
    """A Lua script and its SHA1, sent by EVALSHA (and loaded when Redis does not know it)."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def load(self, client: redis.Redis) -> None:
        client.script_load(self.source)


# (the packed command, the script it runs if any, the caller's future)
_Call = tuple[list[bytes], "Script | None", "asyncio.Future[Any]"]


class Coalescer:
    """Run commands and Lua scripts for many coroutines in shared pipelines (asyncio only)."""

    def __init__(self, client: redis.asyncio.Redis):
        self.client = client
        self._pending: list[_Call] = []
        self._scheduled = False

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

    def _queue(self, packed: list[bytes], script: Script | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((packed, script, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        asyncio.ensure_future(self._send(batch)).add_done_callback(_quiet)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted or flushed its scripts: load them, send those again
                scripts = {batch[i][1] for i in missing}
                for script in scripts:
                    assert script is not None
                    await self.client.script_load(script.source)
                for i, result in zip(missing, await self._execute([batch[i] for i in missing])):
                    results[i] = result
        except Exception as exc:  # connection errors: every caller in the batch gets it
            results = [exc] * len(batch)
        for (*_, future), result in zip(batch, results):
            if future.done():  # the caller gave up waiting
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        packed = [part for parts, _, _ in batch for part in parts]
        pool = self.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(packed)
            results: list[Any] = []
            for _ in batch:
                try:
                    results.append(await connection.read_response())
                except redis.ResponseError as exc:  # this call failed; the others stand
                    results.append(exc)
            return results
        except BaseException:
            await connection.disconnect()  # a half-read reply must not reach the next user
            raise
        finally:
            await pool.release(connection)


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # errors went to the callers; do not log them again


class Pipeline:
    """A blocking pipeline that streams: commands go to Redis in chunks while more are queued,
    replies are read at ``execute``. Redis works on the first commands while Python prepares
    the next, and packing is done by hiredis, not in Python.

    Scripts must be loaded first (``Script.load``); an error reply is returned in its place.
    """

    def __init__(self, client: redis.Redis, chunk: int = 256):
        self.client = client
        self.chunk = chunk
        self._connection: Any = None
        self._buffer: list[bytes] = []
        self._sent = 0

    def __len__(self) -> int:
        return self._sent + len(self._buffer)

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> None:
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
        try:
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
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
            raise
        self._sent += len(self._buffer)
        self._buffer = []
