"""Refusals say what would do: a value outside a fixed set lists the set, a duration says what
is accepted in words, a profile id that finds no one names the forms an id may take."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from edge.routes.profiles import FORMS
from edge.runtime.config import ConfigError, load_config
from tests.conftest import Engine
from tests.helpers import bearer, put_placement

KINDS = "ab, epsilon_greedy, gaussian_thompson, linear_thompson, linucb, revenue_thompson, thompson, top_two_thompson, ucb1"
DURATION = (
    "must be a number and a unit with nothing between, the unit s (seconds), m (minutes), "
    'h (hours) or d (days): like "30s", "15m", "1h", "1.5h" or "7d"'
)


def journey(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "trigger": {"kind": "event", "event": "Product Added"},
        "start": "wait",
        "steps": {"wait": {"type": "wait", "duration": "1h", "next": "end"},
                  "end": {"type": "end"}},
    }  # fmt: skip
    return {**body, **changes}


CASES = [
    pytest.param(
        "PUT", "/v1/placements/p1", {"policy": {"kind": "thomson"}, "variants": [{"key": "a"}]},
        f"$.policy.kind: Invalid enum value 'thomson' — expected one of {KINDS}", id="policy-kind",
    ),
    pytest.param(
        "PUT", "/v1/placements/p1", {"policy": {"kind": "ucb1", "detect_changes": True}, "variants": [{"key": "a"}]},
        "$.policy.detect_changes: must go with kind thompson, top_two_thompson, revenue_thompson, got 'ucb1'",
        id="detect-changes-kind",
    ),
    pytest.param(
        "PUT", "/v1/placements/p1", {"policy": {"window": 500, "discount": 0.99}, "variants": [{"key": "a"}]},
        "$.policy.window: must not be given with `discount` (both set the memory: give one), got window 500 and discount 0.99",
        id="window-and-discount",
    ),
    pytest.param(
        "PUT", "/v1/placements/p1", {"policy": {"window": 1}, "variants": [{"key": "a"}]},
        "$.policy.window: Expected `int` >= 2", id="window-too-short",
    ),
    pytest.param(
        "PUT", "/v1/placements/p1", {"policy": {"detect_changes": True, "change_threshold": 0.5}, "variants": [{"key": "a"}]},
        "$.policy.change_threshold: Expected `float` >= 1.0", id="change-threshold",
    ),
    pytest.param(
        "PUT", "/v1/placements/p1", {"reward": {"kind": "clicks"}, "variants": [{"key": "a"}]},
        "$.reward.kind: Invalid enum value 'clicks' — expected one of click, conversion, items, "
        "revenue", id="reward-kind",
    ),
    pytest.param(
        "GET", "/v1/placements/hero/evaluate?kind=ucb", None,
        f"$.policy.kind: Invalid enum value 'ucb' — expected one of {KINDS}", id="evaluate-kind",
    ),
    pytest.param(
        "PUT", "/v1/segments/s1", {"rule": {"all": [{"field": "traits.plan", "op": "like"}]}},
        "$.rule.all[0].op: Invalid enum value 'like' — expected one of contains, eq, exists, gt, "
        "gte, in, lt, lte, neq", id="segment-op",
    ),
    pytest.param(
        "PUT", "/v1/journeys/j1", journey(entry={"reentry": "twice"}),
        "$.entry.reentry: Invalid enum value 'twice' — expected one of always, days, once",
        id="journey-reentry",
    ),
    pytest.param(
        "PUT", "/v1/journeys/j1", journey(trigger={"kind": "events", "event": "E"}),
        "$.trigger.kind: Invalid value 'events' — expected one of event, onchain, score, "
        "segment_entered, segment_exited", id="journey-trigger-kind",
    ),
    pytest.param(
        "PUT", "/v1/journeys/j1",
        journey(steps={"wait": {"type": "mail", "next": "end"}, "end": {"type": "end"}}),
        "$.steps.wait.type: Invalid value 'mail' — expected one of branch, discord, email, emit, "
        "end, score, split, telegram, traits, wait, webhook", id="journey-step-type",
    ),
    pytest.param(
        "PUT", "/v1/journeys/j1",
        journey(steps={"wait": {"type": "email", "url": "https://m.example/", "layout": "card",
                                "next": "end"}, "end": {"type": "end"}}),
        "$.steps.wait.layout: Invalid enum value 'card' — expected one of grid, list",
        id="journey-email-layout",
    ),
    pytest.param(
        "PUT", "/v1/journeys/j1",
        journey(steps={"wait": {"type": "wait", "duration": "5 minutes", "next": "end"},
                       "end": {"type": "end"}}),
        f"$.steps.wait.duration: {DURATION}; got '5 minutes'", id="journey-duration",
    ),
    pytest.param(
        "PUT", "/v1/journeys/j1",
        journey(steps={"wait": {"type": "wait", "until_event": "Order Completed",
                                "timeout": "1 day", "timeout_next": "end", "next": "end"},
                       "end": {"type": "end"}}),
        f"$.steps.wait.timeout: {DURATION}; got '1 day'", id="journey-timeout",
    ),
    pytest.param(
        "POST", "/v1/batch", {"batch": [{"type": "purchase", "userId": "u1"}]},
        "$.batch[0].type: Invalid value 'purchase' — expected one of alias, group, identify, "
        "page, screen, track", id="message-type",
    ),
    pytest.param(
        "POST", "/v1/page", {"type": "track", "userId": "u1"},
        "$.type: Invalid value 'track' — expected one of page", id="single-message-type",
    ),
    pytest.param(
        "GET", "/v1/profiles/nobody", None,
        f"no profile 'nobody': give {FORMS}, e.g. user_id:nobody", id="profile-bare-id",
    ),
    pytest.param(
        "GET", "/v1/profiles/phone:123", None,
        f"$.id: 'phone:123' is not a profile id nor an identity: give {FORMS}",
        id="profile-unknown-kind",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "message"), CASES)
def test_refusals_name_what_is_accepted(
    engine: Engine, method: str, path: str, body: Any, message: str
) -> None:
    put_placement(engine, "hero", {"variants": [{"key": "a"}, {"key": "b"}]})
    tracking = path in ("/v1/batch", "/v1/page")
    headers = {} if tracking else bearer()
    if tracking:
        answer = engine.post(path, body)
    else:
        answer = engine.client.request(method, engine.url + path, json=body, headers=headers)
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["message"] == message


def test_the_forms_of_a_profile_id_are_the_ones_read() -> None:
    """FORMS, which the messages quote, names every kind the parser takes, and p_ ids."""
    from edge.routes.profiles import _KINDS

    named = set(re.findall(r"(\w+):<", FORMS))
    assert named == set(_KINDS) and "p_" in FORMS


def test_the_config_file_lists_the_values_too(tmp_path: Path) -> None:
    config = tmp_path / "kairos.toml"
    config.write_text(
        '[placements.hero]\npolicy = { kind = "thomson" }\nvariants = [{ key = "a" }]\n'
    )
    with pytest.raises(ConfigError, match=re.escape(f"'thomson' - at `$.placements[...].policy.kind` — expected one of {KINDS}")):  # fmt: skip
        load_config(config)
    config.write_text(
        '[journeys.j]\nstart = "w"\ntrigger = { kind = "event", event = "E" }\n'
        'steps.w = { type = "wait", duration = "soon", next = "e" }\nsteps.e = { type = "end" }\n'
    )
    with pytest.raises(ConfigError, match=re.escape(f"`duration` {DURATION}; got 'soon'")):
        load_config(config)
