"""Where the engine's stores are and how every process reaches them: one place for it.

- Redis: ``redis_client`` / ``async_redis_client`` for every call site (timeouts set, so that a
  store that hangs cannot hold a process that was asked to stop). A URL naming any node of a
  Redis Cluster gives a cluster client (redis-py's ``RedisCluster``, which routes each command
  to its slot's master and follows MOVED/ASK): the mode is asked of the node (``INFO cluster``)
  unless ``cluster`` or KAIROS_REDIS_CLUSTER=1 (what ``--redis-cluster`` sets) says it.
- ClickHouse: embedded (``chdb://<data dir>/clickhouse``) or a server URL. Embedded, exactly one
  process owns it (the sink, or ``kairos up`` itself without a sink) and the others read through
  its query socket, ``<data dir>/run/store.sock`` (``reads_url``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from collector import embedded_url

__all__ = [
    "async_redis_client",
    "clickhouse_url",
    "embedded",
    "is_cluster",
    "reads_url",
    "redis_client",
    "smtp_url",
    "store_socket",
]

_CONNECT_SECONDS = 5.0
_ANSWER_SECONDS = 30.0  # longer than any blocking read a worker makes (at most a second)


@functools.lru_cache(maxsize=16)
def is_cluster(url: str) -> bool:
    """Whether the Redis at ``url`` is a node of a Redis Cluster (``cluster_enabled:1``)."""
    if os.environ.get("KAIROS_REDIS_CLUSTER", "") in ("1", "true", "yes"):
        return True
    if url.startswith("unix://"):
        return False  # a cluster's nodes talk over TCP: a socket is a single server
    with redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_SECONDS,
                              socket_timeout=_CONNECT_SECONDS) as probe:  # fmt: skip
        return bool(probe.info("cluster").get("cluster_enabled"))


def redis_client(url: str, cluster: bool | None = None) -> redis.Redis:
    """A blocking client (workers, the API's threads, commands); a cluster client when the URL
    names a node of a Redis Cluster (``cluster``: None asks the node)."""
    options: dict[str, Any] = {"socket_connect_timeout": _CONNECT_SECONDS,
                               "socket_timeout": _ANSWER_SECONDS}  # fmt: skip
    if is_cluster(url) if cluster is None else cluster:
        client = redis.RedisCluster.from_url(url, **options)
        client.nodes_manager.__class__ = _Topology
        return client  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


def async_redis_client(
    url: str, timeout: float = 10.0, cluster: bool | None = None
) -> redis.asyncio.Redis:
    """An asyncio client (the API); ``timeout``: the longest a request waits on one answer."""
    options: dict[str, Any] = {"socket_connect_timeout": _CONNECT_SECONDS,
                               "socket_timeout": timeout}  # fmt: skip
    if is_cluster(url) if cluster is None else cluster:
        client = redis.asyncio.RedisCluster.from_url(url, **options)
        client.nodes_manager.__class__ = _AsyncTopology
        return client  # type: ignore[return-value]
    return redis.asyncio.Redis.from_url(url, **options)


# Mid-failover, redis-py's topology refresh can read a reply that is not CLUSTER SLOTS' (our
# failover drill saw ``IndexError: string index out of range`` from ``NodesManager.initialize``
# on redis-py 8.1) and the worker thread died of it. It is what ClusterDownError says (the
# topology is not readable yet), which the client retries and callers treat as an outage.
_UNREADABLE = (IndexError, KeyError, TypeError, ValueError)


def _unreadable(exc: Exception) -> redis.exceptions.ClusterDownError:
    return redis.exceptions.ClusterDownError(f"cluster topology unreadable: {exc!r}")


class _Topology(redis.cluster.NodesManager):
    def initialize(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().initialize(*args, **kwargs)
        except _UNREADABLE as exc:
            raise _unreadable(exc) from exc

    def close(self) -> None:
        """Close the nodes' connections too: redis-py 8.1 gives each node a client over a pool
        of its own that ``Redis.close`` leaves open (not its pool), so the sockets stayed open
        until the garbage collector found them."""
        nodes = tuple(self.nodes_cache.values())
        super().close()
        for node in nodes:
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()


class _AsyncTopology(redis.asyncio.cluster.NodesManager):
    __slots__ = ()

    async def initialize(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().initialize(*args, **kwargs)
        except _UNREADABLE as exc:
            raise _unreadable(exc) from exc


def smtp_url(configured: str) -> str:
    """The SMTP server mail goes through: KAIROS_SMTP_URL, else the config file's ``[email]
    url`` (empty: none, and email steps say so)."""
    return os.environ.get("KAIROS_SMTP_URL") or configured


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
