"""Where the engine's stores are and how every process reaches them: one place for it.

- Redis: ``redis_client`` / ``async_redis_client`` for every call site (timeouts set, so that a
  store that hangs cannot hold a process that was asked to stop).
- ClickHouse: embedded (``chdb://<data dir>/clickhouse``) or a server URL. Embedded, exactly one
  process owns it (the sink, or ``kairos up`` itself without a sink) and the others read through
  its query socket, ``<data dir>/run/store.sock`` (``reads_url``).
"""

from __future__ import annotations

from pathlib import Path

import redis
import redis.asyncio

from collector import embedded_url

__all__ = [
    "async_redis_client",
    "clickhouse_url",
    "embedded",
    "reads_url",
    "redis_client",
    "store_socket",
]

_CONNECT_SECONDS = 5.0
_ANSWER_SECONDS = 30.0  # longer than any blocking read a worker makes (at most a second)


def redis_client(url: str) -> redis.Redis:
    """A blocking client (workers, the API's threads, commands)."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=_CONNECT_SECONDS, socket_timeout=_ANSWER_SECONDS
    )


def async_redis_client(url: str, timeout: float = 10.0) -> redis.asyncio.Redis:
    """An asyncio client (the API); ``timeout``: the longest a request waits on one answer."""
    return redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=_CONNECT_SECONDS, socket_timeout=timeout
    )


def clickhouse_url(data_dir: Path, given: str | None) -> str:
    """The ClickHouse server given, else the embedded engine in the data dir."""
    return given or embedded_url(data_dir.resolve())


def embedded(url: str) -> bool:
    return url.startswith("chdb://")


def store_socket(data_dir: Path) -> Path:
    """The query socket of the process that owns embedded ClickHouse."""
    return data_dir.resolve() / "run" / "store.sock"


def reads_url(data_dir: Path, clickhouse: str) -> str:
    """Where a process that does not own ClickHouse reads history: the server itself, or the
    owner's query socket when it is embedded."""
    return f"unix://{store_socket(data_dir)}" if embedded(clickhouse) else clickhouse
