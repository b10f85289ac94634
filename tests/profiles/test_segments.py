from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
import redis

from collector import wire
from profiles import ProfileStore
from profiles.membership import Membership, member_key, put_segment
from profiles.segments import SEGMENT, Segment, View, matches
from tests.profiles.conftest import send

DAY_MS = 86_400_000


def view(**values: Any) -> View:
    return View(traits=values.get("traits", {}), computed=values.get("computed", {}), scores={},
                first_touch={}, events=lambda name, days: values.get("events", {}).get((name, days), 0))  # fmt: skip


def rule(text: str) -> Any:
    return SEGMENT.decode(('{"rule": ' + text + "}").encode()).rule


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"field": "traits.plan", "op": "eq", "value": "pro"}', True, id="eq"),
        pytest.param('{"field": "traits.plan", "op": "neq", "value": "pro"}', False, id="neq"),
        pytest.param(
            '{"field": "traits.missing", "op": "neq", "value": "pro"}', True, id="neq-missing"
        ),
        pytest.param('{"field": "computed.orders", "op": "gt", "value": 2}', True, id="gt"),
        pytest.param('{"field": "computed.orders", "op": "gte", "value": 3}', True, id="gte"),
        pytest.param('{"field": "computed.orders", "op": "lt", "value": 3}', False, id="lt"),
        pytest.param('{"field": "computed.orders", "op": "lte", "value": 3}', True, id="lte"),
        pytest.param(
            '{"field": "traits.plan", "op": "in", "value": ["pro", "team"]}', True, id="in"
        ),
        pytest.param(
            '{"field": "traits.email", "op": "contains", "value": "@EXAMPLE"}',
            True,
            id="contains-text",
        ),
        pytest.param(
            '{"field": "traits.tags", "op": "contains", "value": "vip"}', True, id="contains-list"
        ),
        pytest.param('{"field": "traits.email", "op": "exists", "value": true}', True, id="exists"),
        pytest.param(
            '{"field": "traits.phone", "op": "exists", "value": false}', True, id="not-exists"
        ),
        pytest.param('{"field": "traits.plan", "op": "gt", "value": 3}', False, id="type-mismatch"),
        pytest.param('{"event": "Order Completed", "min": 2, "days": 30}', True, id="event-window"),
        pytest.param(
            '{"event": "Order Completed", "min": 4, "days": 30}', False, id="event-too-few"
        ),
        pytest.param(
            '{"all": [{"field": "traits.plan", "op": "eq", "value": "pro"}, {"not": {"field": "computed.orders", "op": "lt", "value": 1}}]}',
            True,
            id="all-not",
        ),
        pytest.param(
            '{"any": [{"field": "traits.plan", "op": "eq", "value": "free"}, {"event": "Order Completed", "min": 1, "days": 30}]}',
            True,
            id="any",
        ),
    ],
)
def test_rules(text: str, expected: bool) -> None:
    subject = view(traits={"plan": "pro", "email": "ada@example.com", "tags": ["vip"]},
                   computed={"orders": 3}, events={("Order Completed", 30): 3})  # fmt: skip
    assert matches(rule(text), subject) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{}", r"a rule is exactly one of .* got none", id="empty"),
        pytest.param(
            '{"field": "traits.a", "op": "eq", "event": "E"}', r"got field, event", id="two-forms"
        ),
        pytest.param(
            '{"field": "plan", "op": "eq"}', r"`field` must be traits.<name>", id="bad-field"
        ),
        pytest.param('{"field": "traits.a"}', r"`op` must be set", id="no-op"),
        pytest.param(
            '{"field": "traits.a", "op": "like"}', r"Invalid enum value 'like'", id="bad-op"
        ),
        pytest.param(
            '{"field": "traits.a", "op": "in", "value": 3}',
            r"`value` must be a list",
            id="in-not-list",
        ),
        pytest.param('{"event": "E", "min": 0}', r"Expected `int` >= 1", id="min-zero"),
        pytest.param(
            '{"all": [{"field": "traits.a", "op": "eq"}, {"event": ""}]}',
            r"length >= 1 - at `\$.rule.all\[1\].event`",
            id="nested-path",
        ),
    ],
)
def test_bad_rules_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        rule(text)


def test_time_window_segments_are_left_when_events_age_out(
    redis_url: str, r: redis.Redis, store: ProfileStore, drain: Any
) -> None:
    emitted: list[wire.Message] = []
    membership = Membership(store, emitted.extend)
    put_segment(
        r, "recent_buyers", Segment(rule=rule('{"event": "Order Completed", "min": 1, "days": 2}'))
    )
    send(
        redis_url,
        {"type": "track", "userId": "u", "event": "Order Completed", "properties": {"revenue": 1}},
    )
    drain()
    (pid,) = store.lookup(["user_id:u"]).values()
    now = int(time.time() * 1000)
    assert membership.evaluate({pid}, "batch:1", now_ms=now) == 1
    assert r.smembers(member_key("recent_buyers")) == {pid.encode()}
    assert membership.sweep("sweep:a", now_ms=now + DAY_MS) == 0  # still inside the window
    assert membership.sweep("sweep:b", now_ms=now + 3 * DAY_MS) == 1
    assert r.smembers(member_key("recent_buyers")) == set()
    assert [m.event for m in emitted] == ["Segment Entered", "Segment Exited"]
    assert emitted[0].message_id != emitted[1].message_id
