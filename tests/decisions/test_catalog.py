"""A slot's content: template renders reused for the same traits (only when a render cannot
differ), fresh copies handed out, the cache bounded; decision ids unique, in forked children
too."""

from __future__ import annotations

import os
import re

import msgspec
import pytest

from decisions.catalog import _RENDERS, Slot
from decisions.placements import PLACEMENT
from decisions.records import new_decision_id


def _slot(*templates: str) -> Slot:
    variants = [{"key": "plain", "content": {"image": "/a.jpg"}}]
    variants += [{"key": f"t{i}", "template": t, "content": {"cta": "Buy"}}
                 for i, t in enumerate(templates)]  # fmt: skip
    return Slot.of("hero", PLACEMENT.decode(msgspec.json.encode({"variants": variants})))


def test_a_render_is_reused_for_the_same_traits_and_handed_out_as_a_copy() -> None:
    slot = _slot("<h1>Hi {{ first_name or 'there' }}</h1>")
    first = slot.content(1, {})
    assert first == {"html": "<h1>Hi there</h1>", "cta": "Buy"}
    first["html"] = "changed by a caller"
    again = slot.content(1, {})
    assert again == {"html": "<h1>Hi there</h1>", "cta": "Buy"} and again is not first
    assert slot.content(1, {"first_name": "<Ada>"})["html"] == "<h1>Hi &lt;Ada&gt;</h1>"
    assert len(slot.rendered) == 2
    assert slot.content(0, {"first_name": "Ada"}) == {"image": "/a.jpg"}  # no template


def test_a_template_that_draws_is_rendered_every_time() -> None:
    slot = _slot("{{ [1, 2, 3]|random }}", "{{ lipsum(1) }}", "{{ [1, 2]|map('random')|list }}",
                 "{{ range(3)|join(',') }}")  # fmt: skip
    assert slot.repeatable == [True, False, False, False, True]
    for arm in (1, 2, 3):
        slot.content(arm, {})
    assert slot.rendered == {}
    assert slot.content(4, {})["html"] == "0,1,2" and len(slot.rendered) == 1


def test_the_render_cache_is_bounded() -> None:
    slot = _slot("{{ n }}")
    for n in range(_RENDERS + 10):
        assert slot.content(1, {"n": n})["html"] == str(n)
    assert 0 < len(slot.rendered) <= _RENDERS


def test_decision_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_decision_id() for _ in range(20_000)]  # several batches of random suffixes
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"d_[0-9a-f]{24}", i) for i in ids)
    assert ids == sorted(ids, key=lambda i: i[2:14])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")  # Python ≥ 3.12
def test_a_forked_child_does_not_repeat_its_parents_decision_ids() -> None:
    new_decision_id()  # the parent holds suffixes not handed out yet
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, " ".join(new_decision_id()[14:] for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(child, 0)
    ours = {new_decision_id()[14:] for _ in range(100)}
    assert len(theirs) == 100 and not ours & theirs
