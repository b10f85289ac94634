"""Identity across spool partitions: one person's devices hash to different partitions, two
profile updaters hold them, and both devices log in at the same moment."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from collector import Layout, SpoolReader, layout_of, wire
from collector.spool import append_now
from profiles import ProfileStore, ProfileUpdater

FOUR = Layout(4)


def devices(count: int) -> list[tuple[str, str]]:
    """Pairs of anonymous ids that land in different partitions (0 and 1)."""
    zero = [f"d{i}" for i in range(2000) if FOUR.of(f"d{i}") == 0]
    one = [f"d{i}" for i in range(2000) if FOUR.of(f"d{i}") == 1]
    return list(zip(zero, one))[:count]


def page(anonymous_id: str, n: int) -> wire.Message:
    return wire.Page(anonymous_id=anonymous_id, message_id=f"{anonymous_id}-p{n}",
                     properties=msgspec_raw({"path": f"/{n}"}))  # fmt: skip


def msgspec_raw(value: dict[str, Any]) -> Any:
    import msgspec

    return msgspec.Raw(msgspec.json.encode(value))


def login(anonymous_id: str, user_id: str) -> wire.Message:
    return wire.Identify(anonymous_id=anonymous_id, user_id=user_id,
                         message_id=f"{anonymous_id}-login")  # fmt: skip


def updater(r: redis.Redis, name: str, partition: int) -> ProfileUpdater:
    reader = SpoolReader(r, "profiles", name, FOUR)
    reader.ensure_group()
    for index, holder in enumerate([name if p == partition else "elsewhere" for p in range(4)]):
        r.set(FOUR.partition(index).lease("profiles"), holder, px=60_000, nx=True)
    reader.balance(force=True)
    assert [p.index for p in reader.held] == [partition]
    return ProfileUpdater(reader, ProfileStore(r))


def drain(each: ProfileUpdater) -> None:
    while entries := each.reader.read(100, 1):
        each.process(entries)
        each.reader.ack(entries, {})


def resolve(store: ProfileStore, identity: str) -> str:
    (pid,) = store.lookup([identity]).values()
    return store.resolve(pid)


def test_concurrent_logins_on_two_partitions_end_in_one_profile(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout_of(r, 4)
    people = devices(12)
    append_now(r, [page(d, n) for pair in people for d in pair for n in range(3)], FOUR)
    r.set(FOUR.partition(1).lease("profiles"), "u1", px=60_000)  # each holds one partition
    first, second = updater(r, "u0", 0), updater(r, "u1", 1)
    drain(first)
    drain(second)
    store = ProfileStore(r)
    assert all(resolve(store, f"anonymous_id:{a}") != resolve(store, f"anonymous_id:{b}")
               for a, b in people)  # fmt: skip
    append_now(r, [login(d, f"user-{i}") for i, pair in enumerate(people) for d in pair], FOUR)
    # Both look up the users (unknown to either) before either claims one: a real race.
    looked = threading.Barrier(2, timeout=30)
    real = ProfileUpdater._links

    def links(self: ProfileUpdater, identities: set[str]) -> dict[str, str]:
        found = real(self, identities)
        if any(i.startswith("user_id:") for i in identities):
            looked.wait()
        return found

    monkeypatch.setattr(ProfileUpdater, "_links", links)
    threads = [threading.Thread(target=drain, args=(each,)) for each in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, (a, b) in enumerate(people):
        pid = resolve(store, f"user_id:user-{i}")
        assert resolve(store, f"anonymous_id:{a}") == resolve(store, f"anonymous_id:{b}") == pid
        profile = store.read(pid)
        assert profile.number("page_views") == 6  # both devices' pages, each once
        assert profile.identities == sorted([f"anonymous_id:{a}", f"anonymous_id:{b}",
                                             f"user_id:user-{i}"])  # fmt: skip
