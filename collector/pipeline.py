"""``Pipeline``: a blocking pipeline that streams a worker's commands.

Commands go to Redis in chunks while more are queued; replies are read at ``execute``. Redis
works on the first commands while Python prepares the next, and packing is done by hiredis, not
in Python. On a Redis Cluster each command streams to the master of its key's slot (a script's,
of its first key), one connection per master; a reply that says the slot has moved (MOVED, ASK,
TRYAGAIN during a migration) is answered by running that command again through the cluster
client, which follows the redirect and learns the new slot map. Each command is one write of one
key's slot, so running it again changes nothing the first run did: the node that redirected
did not run it.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.exceptions import AskError, NoScriptError, TryAgainError

from collector.scripts import Script

__all__ = ["Pipeline"]


class Pipeline:
    """Queue ``command``\\ s and ``script``\\ s, then ``execute`` for their replies in order.

    A script's first call on each connection in a round trip is preceded by its ``SCRIPT LOAD``
    (whose reply is not returned), so scripts never meet NOSCRIPT here; an error reply is
    returned in its place.
    """

    def __init__(self, client: redis.Redis | redis.RedisCluster, chunk: int = 256):
        self.client = client
        self.chunk = chunk
        self._cluster = isinstance(client, redis.RedisCluster)
        self._streams: dict[str, _Stream] = {}
        self._order: list[tuple[_Stream, int]] = []  # where each reply will be
        self._calls: list[tuple[Script | None, tuple[Any, ...]]] = []  # cluster: to run again

    def __len__(self) -> int:
        return len(self._order)

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        stream = self._stream(keys[0] if keys else None)
        if script.sha not in stream.loaded:
            stream.loaded.add(script.sha)
            load = ("SCRIPT", "LOAD", script.source)
            self._write(stream, hiredis.pack_command(load))  # type: ignore[arg-type]
        self._add(stream, script, ("EVALSHA", script.sha, len(keys), *keys, *args))

    def command(self, *args: Any) -> None:
        """One command (``"SET", key, value``: the key second)."""
        self._add(self._stream(args[1] if len(args) > 1 else None), None, args)

    def execute(self) -> list[Any]:
        streams, order, calls = self._streams, self._order, self._calls
        self._streams, self._order, self._calls = {}, [], []
        got: dict[int, list[Any]] = {}
        try:
            for stream in streams.values():
                got[id(stream)] = stream.replies()
        finally:
            for stream in streams.values():
                stream.release()
        replies = [got[id(stream)][position] for stream, position in order]
        if self._cluster:
            for index, reply in enumerate(replies):
                if isinstance(reply, AskError | TryAgainError):  # MovedError is an AskError
                    replies[index] = self._again(*calls[index])
        return replies

    def _add(self, stream: _Stream, script: Script | None, args: tuple[Any, ...]) -> None:
        self._order.append((stream, self._write(stream, hiredis.pack_command(args))))
        if self._cluster:
            self._calls.append((script, args))

    def _write(self, stream: _Stream, packed: bytes) -> int:
        """Queue ``packed`` on ``stream``: its reply's position. A chunk that cannot be written
        drops the whole pipeline (its connections closed), and raises."""
        try:
            return stream.add(packed)
        except BaseException:
            streams, self._streams, self._order, self._calls = self._streams, {}, [], []
            for each in streams.values():
                each.release(broken=True)
            raise

    def _stream(self, key: Any) -> _Stream:
        if not self._cluster:
            name, pool = "", self.client.connection_pool
        else:
            assert isinstance(self.client, redis.RedisCluster)
            node = (self.client.get_node_from_key(key) if key is not None
                    else self.client.get_default_node())  # fmt: skip
            name, pool = node.name, node.redis_connection.connection_pool
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream(pool, self.chunk)
        return stream

    def _again(self, script: Script | None, args: tuple[Any, ...]) -> Any:
        assert isinstance(self.client, redis.RedisCluster)
        try:
            try:
                return self.client.execute_command(*args)
            except NoScriptError:  # the node now serving the slot has not seen the script
                assert script is not None
                self.client.script_load(script.source)
                return self.client.execute_command(*args)
        except redis.ResponseError as exc:
            return exc


class _Stream:
    """Commands written to one server over one pooled connection, in chunks."""

    def __init__(self, pool: Any, chunk: int):
        self.pool, self.chunk = pool, chunk
        self.connection: Any = None
        self.buffer: list[bytes] = []
        self.sent = 0
        self.loaded: set[str] = set()  # scripts loaded on this connection in this round

    def add(self, packed: bytes) -> int:
        """Queue one packed command; its reply's position."""
        self.buffer.append(packed)
        position = self.sent + len(self.buffer) - 1
        if len(self.buffer) >= self.chunk:
            self.flush()
        return position

    def flush(self) -> None:
        if not self.buffer:
            return
        if self.connection is None:
            self.connection = self.pool.get_connection()
        self.connection.send_packed_command([b"".join(self.buffer)], check_health=False)
        self.sent += len(self.buffer)
        self.buffer = []

    def replies(self) -> list[Any]:
        """Every reply due (an error reply in its place)."""
        replies: list[Any] = []
        try:
            self.flush()
            for _ in range(self.sent):
                try:
                    replies.append(self.connection.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self.release(broken=True)
            raise
        return replies

    def release(self, broken: bool = False) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            if broken:
                connection.disconnect()
            self.pool.release(connection)
