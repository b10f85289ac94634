"""Definitions cached in process, loaded again only when their version key moves.

Every writer of a set of definitions (placements, segments, journeys, the suppression list)
bumps a counter in Redis with the change (``{plc}:version``, ``{seg}:version``, …). A reader
keeps what it loaded with the version it saw, and each refresh costs one GET while nothing
changed. An absent key is a version too (nothing was ever written): the first read loads.

Examples:
    >>> cache = Versioned("{seg}:version", {})
    >>> cache.stale(None), cache.update(b"3", {"a": 1}), cache.stale(b"3"), cache.stale(b"4")
    (True, {'a': 1}, False, True)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import redis
import redis.asyncio

__all__ = ["Versioned"]

T = TypeVar("T")


class Versioned(Generic[T]):
    """``value``, as loaded at the version of ``key`` it was loaded at."""

    def __init__(self, key: str, value: T):
        self.key = key
        self.value = value
        self._version: object = None
        self._loaded = False

    def stale(self, version: object) -> bool:
        """True when ``version`` (what ``key`` holds now) is not what ``value`` was loaded at."""
        return not self._loaded or version != self._version

    def update(self, version: object, value: T) -> T:
        """Keep ``value`` as loaded at ``version``."""
        self.value, self._version, self._loaded = value, version, True
        return value

    def forget(self) -> None:
        """Load again at the next look (another process may have written meanwhile)."""
        self._loaded = False

    def get(self, client: redis.Redis, load: Callable[[redis.Redis], T]) -> T:
        """The value, loaded again with ``load`` if its version moved (blocking client)."""
        version = client.get(self.key)
        return self.update(version, load(client)) if self.stale(version) else self.value

    async def aget(
        self, client: redis.asyncio.Redis, load: Callable[[redis.asyncio.Redis], Awaitable[T]]
    ) -> T:
        """The value, loaded again with ``load`` if its version moved (asyncio client)."""
        version = await client.get(self.key)
        return self.update(version, await load(client)) if self.stale(version) else self.value
