"""Placements in Redis: create, replace, delete, and what a deleted placement leaves behind."""

from __future__ import annotations

import redis

from decisions.placements import (
    DEFS,
    PLACEMENT,
    delete_placement,
    placements,
    put_placement,
    state_key,
)

HERO = PLACEMENT.decode(
    b'{"variants": [{"key": "a"}, {"key": "b"}], "policy": {"kind": "thompson"}}'
)


def test_a_state_saved_after_the_delete_never_reaches_a_new_placement(r: redis.Redis) -> None:
    assert put_placement(r, "hero", HERO)
    r.set(state_key("hero"), b"learned before")
    assert delete_placement(r, "hero")
    assert "hero" not in placements(r) and r.get(state_key("hero")) is None
    # A reward worker that began its batch before the delete saves it afterwards:
    r.set(state_key("hero"), b"saved late")
    assert put_placement(r, "hero", HERO)  # created again: it starts from the prior
    assert r.get(state_key("hero")) is None


def test_replacing_a_placement_keeps_what_it_learned(r: redis.Redis) -> None:
    assert put_placement(r, "hero", HERO)
    r.set(state_key("hero"), b"learned")
    changed = PLACEMENT.decode(b'{"variants": [{"key": "a"}, {"key": "c"}]}')
    assert put_placement(r, "hero", changed)
    assert r.get(state_key("hero")) == b"learned"  # remapped by variant key when loaded
    assert r.hexists(DEFS, "hero")
