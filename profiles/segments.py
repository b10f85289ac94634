"""Rule-based segments: the rule language, its validation, and evaluation on one profile.

A rule is one of:

- ``{"all": [rule, ...]}``, ``{"any": [rule, ...]}``, ``{"not": rule}``;
- ``{"field": "traits.plan", "op": "eq", "value": "pro"}`` over ``traits.*``, ``computed.*``,
  ``scores.*`` or ``first_touch.*``, with ``op`` one of eq, neq, gt, gte, lt, lte, in, contains,
  exists (``value`` true or false);
- ``{"event": "Order Completed", "min": 2, "days": 30}``: the event at least ``min`` times in the
  last ``days`` days.

Examples:
    >>> rule = SEGMENT.decode(b'{"name": "Pros", "rule": {"all": ['
    ...     b'{"field": "traits.plan", "op": "eq", "value": "pro"},'
    ...     b'{"event": "Order Completed", "min": 1, "days": 30}]}}').rule
    >>> view = View(traits={"plan": "pro"}, computed={}, scores={}, first_touch={},
    ...             events=lambda name, days: 2 if name == "Order Completed" else 0)
    >>> matches(rule, view)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["SEGMENT", "Rule", "Segment", "View", "event_conditions", "matches"]

Op = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "contains", "exists"]
_SOURCES = ("traits", "computed", "scores", "first_touch")


class Rule(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    all: list[Rule] | None = None
    any: list[Rule] | None = None
    not_: Rule | None = msgspec.field(default=None, name="not")
    field: str | None = None
    op: Op | None = None
    value: Any = None
    event: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    min: Annotated[int, msgspec.Meta(ge=1)] = 1
    days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30

    def __post_init__(self) -> None:
        forms = [
            name
            for name in ("all", "any", "not_", "field", "event")
            if getattr(self, name) is not None
        ]
        if len(forms) != 1:
            raise ValueError(
                "a rule is exactly one of all / any / not / field+op+value / event+min+days, "
                f"got {', '.join(f.rstrip('_') for f in forms) or 'none'}"
            )
        if self.field is not None:
            source, _, name = self.field.partition(".")
            if source not in _SOURCES or not name:
                raise ValueError(
                    f"`field` must be traits.<name>, computed.<name>, scores.<name> or "
                    f"first_touch.<name>, got {self.field!r}"
                )
            if self.op is None:
                raise ValueError("`op` must be set with `field`")
            if self.op == "in" and not isinstance(self.value, list):
                raise ValueError("`value` must be a list with op `in`")


class Segment(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    rule: Rule
    name: str = ""
    description: str = ""


SEGMENT = msgspec.json.Decoder(Segment)


@dataclass(frozen=True, slots=True)
class View:
    """What a rule can see of a profile."""

    traits: dict[str, Any]
    computed: dict[str, Any]
    scores: dict[str, Any]
    first_touch: dict[str, Any]
    events: Callable[[str, int], int]  # (event name, days) -> count in that window


def matches(rule: Rule, view: View) -> bool:
    if rule.all is not None:
        return all(matches(part, view) for part in rule.all)
    if rule.any is not None:
        return any(matches(part, view) for part in rule.any)
    if rule.not_ is not None:
        return not matches(rule.not_, view)
    if rule.event is not None:
        return view.events(rule.event, rule.days) >= rule.min
    assert rule.field is not None and rule.op is not None
    source, _, name = rule.field.partition(".")
    values: dict[str, Any] = getattr(view, source)
    if name not in values and "." in name:  # a nested value: computed.holdings.<contract>
        head, _, rest = name.partition(".")
        inner = values.get(head)
        values, name = (inner, rest) if isinstance(inner, dict) else ({}, name)
    return _compare(rule.op, name in values, values.get(name), rule.value)


def _compare(op: str, present: bool, have: Any, want: Any) -> bool:
    if op == "exists":
        return present == bool(want if want is not None else True)
    if not present:
        return op == "neq"
    if op == "eq":
        return bool(have == want)
    if op == "neq":
        return bool(have != want)
    if op == "in":
        return have in want
    if op == "contains":
        if isinstance(have, str) and isinstance(want, str):
            return want.lower() in have.lower()
        return isinstance(have, list | dict) and want in have
    try:
        if op == "gt":
            return bool(have > want)
        if op == "gte":
            return bool(have >= want)
        if op == "lt":
            return bool(have < want)
        return bool(have <= want)
    except TypeError:  # "pro" > 3: no match rather than an error
        return False


def event_conditions(rule: Rule) -> list[Rule]:
    """The ``event`` conditions anywhere in ``rule`` (they make membership change with time)."""
    if rule.event is not None:
        return [rule]
    parts = (rule.all or []) + (rule.any or []) + ([rule.not_] if rule.not_ else [])
    return [found for part in parts for found in event_conditions(part)]
