"""Redis Cluster routing for our own pipelines: which node serves a key, and what a redirect
says.

A cluster splits the key space into 16,384 hash slots (CRC16 of the key, or of the part inside
``{…}``), each served by one master. ``SlotTable`` is a client's map of them, read with
``CLUSTER SLOTS``; a node that no longer serves a slot answers ``MOVED slot host:port`` (the
slot has moved for good: update the map, send there) or, while the slot is being migrated,
``ASK slot host:port`` (send this one command there, after ``ASKING``; the map stays).

Examples:
    >>> redirect_of(Exception("MOVED 3999 127.0.0.1:7002"))
    Redirect(moved=True, slot=3999, address=('127.0.0.1', 7002))
    >>> redirect_of(Exception("ERR unknown command")) is None
    True
    >>> key_slot("{p:abc}:viewed") == key_slot(b"{p:abc}")
    True
"""

from __future__ import annotations

from typing import Any, NamedTuple

from redis.crc import REDIS_CLUSTER_HASH_SLOTS
from redis.crc import key_slot as _key_slot

__all__ = ["Address", "Redirect", "SlotTable", "key_slot", "redirect_of"]

Address = tuple[str, int]


def key_slot(key: str | bytes) -> int:
    return int(_key_slot(key.encode() if isinstance(key, str) else key))


class Redirect(NamedTuple):
    moved: bool  # MOVED (for good) rather than ASK (this command only)
    slot: int
    address: Address


def redirect_of(error: BaseException) -> Redirect | None:
    """The redirect an error reply carries, if it is one."""
    kind, _, rest = str(error).partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.partition(" ")
    host, _, port = where.rpartition(":")
    return Redirect(kind == "MOVED", int(slot), (host, int(port)))


class SlotTable:
    """Which master serves each hash slot."""

    def __init__(self, ranges: list[tuple[int, int, Address]]):
        self._nodes: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for first, last, address in ranges:
            self._nodes[first : last + 1] = [address] * (last - first + 1)
        self.addresses = sorted({address for *_, address in ranges})

    @classmethod
    def parse(cls, reply: list[Any], asked: Address) -> SlotTable:
        """From a ``CLUSTER SLOTS`` reply got from ``asked`` (a node may name itself by an
        empty host)."""
        ranges = []
        for first, last, master, *_replicas in reply:
            host = master[0].decode() if isinstance(master[0], bytes) else master[0]
            ranges.append((int(first), int(last), (host or asked[0], int(master[1]))))
        return cls(ranges)

    def node(self, key: str | bytes | None) -> Address:
        """The master for ``key`` (any master for no key)."""
        if key is None:
            return self.addresses[0]
        address = self._nodes[key_slot(key)]
        if address is None:
            raise LookupError(f"no node serves the slot of {key!r} (is the cluster complete?)")
        return address

    def move(self, slot: int, address: Address) -> None:
        self._nodes[slot] = address
        if address not in self.addresses:
            self.addresses = sorted({*self.addresses, address})
