from __future__ import annotations

from typing import Any

import pytest

from profiles import ProfileStore
from tests.profiles.conftest import send


def resolve(store: ProfileStore, identity: str) -> str:
    (pid,) = store.lookup([identity]).values()
    return store.resolve(pid)


def test_two_devices_then_login_on_both_is_one_profile(
    redis_url: str, store: ProfileStore, drain: Any
) -> None:
    send(redis_url,
         *[{"type": "page", "anonymousId": "phone", "properties": {"path": f"/p/{i}"}} for i in range(3)],
         *[{"type": "page", "anonymousId": "laptop", "properties": {"path": f"/q/{i}"}} for i in range(2)],
         {"type": "track", "anonymousId": "laptop", "event": "Product Added", "properties": {"product_id": "A"}})  # fmt: skip
    drain()
    assert resolve(store, "anonymous_id:phone") != resolve(store, "anonymous_id:laptop")
    send(redis_url,
         {"type": "identify", "anonymousId": "phone", "userId": "ada", "traits": {"email": "ada@example.com"}},
         {"type": "track", "anonymousId": "phone", "userId": "ada", "event": "Product Added", "properties": {"product_id": "B"}},
         {"type": "identify", "anonymousId": "laptop", "userId": "ada"})  # fmt: skip
    drain()
    pid = resolve(store, "user_id:ada")
    assert (
        resolve(store, "anonymous_id:phone")
        == resolve(store, "anonymous_id:laptop")
        == resolve(store, "email:ada@example.com")
        == pid
    )
    p = store.read(pid)
    assert p.number("page_views") == 5
    assert p.counts()["Product Added"] == 2
    assert sorted(p.cart) == ["A", "B"]
    assert p.identities == [
        "anonymous_id:laptop",
        "anonymous_id:phone",
        "email:ada@example.com",
        "user_id:ada",
    ]
    assert p.fields["user_id"] == "ada"
    assert len(p.merged_from) == 1  # the laptop's anonymous profile folded in


def test_two_user_ids_are_never_merged_silently(
    redis_url: str, store: ProfileStore, drain: Any, caplog: pytest.LogCaptureFixture
) -> None:
    send(redis_url,
         {"type": "identify", "anonymousId": "shared-tablet", "userId": "ada", "traits": {"email": "ada@example.com"}},
         {"type": "page", "anonymousId": "shared-tablet", "userId": "ada"},
         {"type": "identify", "anonymousId": "shared-tablet", "userId": "bob"},
         {"type": "page", "anonymousId": "shared-tablet"})  # fmt: skip
    with caplog.at_level("WARNING", logger="kairos.identity"):
        drain()
    ada, bob = resolve(store, "user_id:ada"), resolve(store, "user_id:bob")
    assert ada != bob
    assert "identity belongs to another user; not merging" in caplog.text
    assert resolve(store, "anonymous_id:shared-tablet") == bob  # the device is Bob's from now on
    assert store.read(ada).number("page_views") == 1
    assert store.read(bob).number("page_views") == 1
    # Bob cannot take Ada's email either.
    send(redis_url, {"type": "identify", "userId": "bob", "traits": {"email": "ada@example.com"}})
    drain()
    assert resolve(store, "email:ada@example.com") == ada


def test_alias_merges_the_previous_identity(
    redis_url: str, store: ProfileStore, drain: Any
) -> None:
    send(redis_url,
         {"type": "track", "anonymousId": "anon-9", "event": "Signed Up"},
         {"type": "track", "userId": "user-9", "event": "Logged In"},
         {"type": "alias", "previousId": "anon-9", "userId": "user-9"})  # fmt: skip
    drain()
    pid = resolve(store, "user_id:user-9")
    assert resolve(store, "anonymous_id:anon-9") == pid
    assert store.read(pid).counts() == {"Signed Up": 1, "Logged In": 1}


def test_an_anonymous_profile_is_adopted_at_login(
    redis_url: str, store: ProfileStore, drain: Any
) -> None:
    send(
        redis_url,
        {"type": "page", "anonymousId": "a"},
        {"type": "identify", "anonymousId": "a", "userId": "u"},
    )
    drain()
    pid = resolve(store, "user_id:u")
    assert pid == resolve(store, "anonymous_id:a")
    assert store.read(pid).merged_from == []  # same profile, no merge needed


def test_merges_keep_the_earliest_first_seen_and_newest_traits(
    redis_url: str, store: ProfileStore, drain: Any
) -> None:
    send(redis_url,
         {"type": "identify", "userId": "u", "timestamp": "2026-11-20T10:00:00Z", "traits": {"plan": "pro"}},
         {"type": "identify", "anonymousId": "old-device", "timestamp": "2026-11-01T10:00:00Z", "traits": {"plan": "free", "city": "Oslo"}},
         {"type": "identify", "anonymousId": "old-device", "userId": "u", "timestamp": "2026-11-21T10:00:00Z"})  # fmt: skip
    drain()
    p = store.read(resolve(store, "user_id:u"))
    assert p.traits() == {"plan": "pro", "city": "Oslo"}
    assert p.fields["first_seen"] == "1793527200000"  # 2026-11-01
