"""Placements: what can be shown in a slot, how it is chosen, and what counts as success.

Definitions live in Redis (``{plc}:defs``, key -> JSON; ``{plc}:version`` bumps on change and
becomes the changed placement's ``revision``), put there by the admin API or the config file.
Each placement's learned policy state lives in ``{pol:<key>}`` (a ``Learned`` document: the
state with the arms, kind and features it was learned for), written by the reward worker, which
bumps the placement's entry in ``{plc}:revs`` after each save so API processes know to reload it.

Examples:
    >>> placement = PLACEMENT.decode(b'{"variants": [{"key": "a"}, {"key": "b"}], "default": "a"}')
    >>> placement.arms(), placement.policy.kind, placement.reward.kind
    (['a', 'b'], 'thompson', 'click')
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Annotated, Any, Literal

import msgspec
import redis
from jinja2 import Template, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bandits.policy import Policy
from bandits.spec import CONTEXTUAL, PolicySpec, build, remap
from collector.partitions import layout_of
from decisions.changes import changes_key
from decisions.features import check_features
from profiles.recommend import STRATEGIES, Filters
from profiles.segments import Rule

__all__ = [
    "DEFS",
    "LEARNED",
    "PLACEMENT",
    "REVS",
    "RESERVED_EVENTS",
    "Learned",
    "Placement",
    "Reward",
    "Variant",
    "compile_template",
    "delete_placement",
    "placements",
    "policy_for",
    "put_placement",
    "render",
    "repeatable",
    "learned_keys",
    "partition_state_key",
    "state_key",
]

log = logging.getLogger("kairos.placements")

DEFS = "{plc}:defs"
VERSION = "{plc}:version"
REVS = "{plc}:revs"
# Events the engine itself sends or interprets: not usable as a conversion event.
RESERVED_EVENTS = ("Decision Clicked", "Decision Viewed", "Decision Rewarded", "Email Opened")
KEY = re.compile(r"[a-z0-9_][a-z0-9_-]{0,63}")
_TEMPLATES = ImmutableSandboxedEnvironment(autoescape=True)  # no code, HTML-escaped output
_INTERNAL_NAME = re.compile(r"__\w|_[A-Za-z]\w*__\w")  # dunders, mangled private names


class Variant(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    key: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    weight: Annotated[float, msgspec.Meta(ge=0.0)] = 1.0
    content: Any = None  # a JSON payload, returned as it is
    template: str | None = None  # jinja2, rendered with the visitor's traits (HTML-escaped)
    strategy: str | None = None  # a recommendation placement's strategy (default: the key)


class Reward(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``click``: 1 when a "Decision Clicked" event carries the decision's id; ``conversion``:
    1 when the person sends ``event`` within the window; ``revenue``: that event's
    ``properties.revenue``. Conversions go to the person's latest decision (last touch).
    ``items`` (recommendation placements): 1 when one of the decision's items is clicked, or
    is in the person's ``event`` (default "Order Completed", its ``products[]``) in the window."""

    kind: Literal["click", "conversion", "revenue", "items"] = "click"
    event: str | None = None
    window_hours: Annotated[float, msgspec.Meta(gt=0.0, le=24 * 90)] = 24.0


class Placement(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    variants: Annotated[list[Variant], msgspec.Meta(min_length=1, max_length=100)]
    default: str | None = None  # a variant key: what the ineligible, and everyone on fallback, see
    policy: PolicySpec = msgspec.field(default_factory=PolicySpec)
    reward: Reward = msgspec.field(default_factory=Reward)
    eligibility: Rule | None = None  # the segment rule language (computed.segments lists them)
    recommend: Filters | None = None  # a recommendation placement: its variants are strategies
    name: str = ""
    description: str = ""
    revision: int = 0  # set by the engine on every change; decisions log it

    def __post_init__(self) -> None:
        keys = self.arms()
        if len(set(keys)) != len(keys):
            raise ValueError("`variants` must have distinct keys")
        if self.default is not None and self.default not in keys:
            raise ValueError(f"`default` must be one of the variant keys, got {self.default!r}")
        if self.reward.kind == "items" and self.recommend is None:
            raise ValueError("`reward.kind` items is for recommendation placements (`recommend`)")
        if self.reward.kind not in ("click", "items") and not self.reward.event:
            raise ValueError(f"`reward.event` must name the event of a {self.reward.kind} reward")
        if self.reward.event in RESERVED_EVENTS:
            raise ValueError(f"`reward.event` cannot be {self.reward.event!r}: the engine sends it")
        if self.policy.features or self.policy.kind in CONTEXTUAL:
            check_features(self.policy.features)
        for variant in self.variants:
            if self.recommend is None and variant.strategy is not None:
                raise ValueError(
                    f"variant {variant.key!r}: `strategy` needs a recommendation placement "
                    "(`recommend`)"
                )
            if self.recommend is not None and self.strategy(variant) not in STRATEGIES:
                raise ValueError(
                    f"variant {variant.key!r}: `strategy` must be one of {', '.join(STRATEGIES)}"
                    f", got {self.strategy(variant)!r}"
                )
            if variant.template is not None:
                _check_template(variant.key, variant.template)

    def arms(self) -> list[str]:
        return [v.key for v in self.variants]

    def strategy(self, variant: Variant) -> str:
        """The recommendation strategy a variant stands for (its key unless it names one)."""
        return variant.strategy or variant.key

    def conversion_event(self) -> str | None:
        """The event that rewards this placement besides clicks, if any."""
        if self.reward.kind == "items":
            return self.reward.event or "Order Completed"
        return None if self.reward.kind == "click" else self.reward.event

    def default_index(self) -> int:
        return self.arms().index(self.default) if self.default else 0


PLACEMENT = msgspec.json.Decoder(Placement)


class Learned(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What ``{pol:<key>}`` holds: a policy's state and what it was learned for."""

    arms: list[str]
    kind: str
    features: list[str]
    rev: int  # bumps with every save
    applied: str  # the spool position of the last decision or reward applied ("" for none)
    state: dict[str, Any]


LEARNED = msgspec.json.Decoder(Learned)


def policy_for(
    key: str, placement: Placement, learned: Learned | None, seed: int | None = None
) -> Policy:
    """The placement's policy with what it learned so far: kept for the variants that still
    exist (new ones start from the prior); dropped if the kind or the features changed."""
    spec = placement.policy
    policy = build(
        spec,
        placement.arms(),
        salt=key,
        weights=[v.weight for v in placement.variants],
        default=placement.default_index(),
        seed=seed,
    )
    same_features = (
        spec.kind not in CONTEXTUAL or learned is None or learned.features == spec.features
    )
    if learned is not None and learned.kind == spec.kind and same_features:
        policy.load(remap(learned.state, learned.arms, placement.arms(), spec.ridge))
    return policy


def _check_template(variant: str, source: str) -> None:
    """A template must parse, and must not name a dunder (``__class__``) or a mangled private name
    (``_TemplateReference__context``): they reach Python's internals. The sandbox refuses them
    at render time anyway; this says so when the placement is saved, naming the variant. Nor
    may it turn escaping off (``|safe``, ``{% autoescape false %}``): traits come from browsers
    (the write key is public), so they are always HTML-escaped."""
    try:
        tree = _TEMPLATES.parse(source)
    except Exception as exc:  # jinja2's syntax errors
        raise ValueError(f"`template` of variant {variant!r} does not parse: {exc}") from None
    for node in tree.find_all((nodes.Filter, nodes.ScopedEvalContextModifier)):
        if isinstance(node, nodes.Filter):
            unescaped = node.name == "safe"
        else:  # {% autoescape … %}: only `true` keeps it on
            unescaped = any(not (isinstance(o.value, nodes.Const) and o.value.value is True)
                            for o in node.options)  # fmt: skip
        if unescaped:
            raise ValueError(f"`template` of variant {variant!r} turns HTML escaping off: "
                             "traits come from browsers and are always escaped")  # fmt: skip
    for node in tree.find_all((nodes.Getattr, nodes.Const)):
        name = node.attr if isinstance(node, nodes.Getattr) else node.value
        if isinstance(name, str) and _INTERNAL_NAME.match(name):
            raise ValueError(f"`template` of variant {variant!r} names {name!r}: Python's "
                             "internals are not for templates")  # fmt: skip


@functools.lru_cache(maxsize=256)
def _failed(variant: str, error: str) -> None:
    """Log a template that fails to render once, not on every decision."""
    log.warning("template failed to render; answered without it",
                extra={"variant": variant, "error": error})  # fmt: skip


def compile_template(variant: Variant) -> Template | None:
    return None if variant.template is None else _TEMPLATES.from_string(variant.template)


# What makes a render differ between two calls with the same traits: the `random` filter and
# the `lipsum` global (jinja2's defaults; the sandbox adds none).
_CHANCE = frozenset({"random", "lipsum"})


def repeatable(variant: Variant) -> bool:
    """Whether the variant's template renders the same for the same traits, so that a render
    may be reused (``decisions.catalog``): it names neither the ``random`` filter nor
    ``lipsum``, not even as a string (``map('random')``)."""
    if variant.template is None:
        return True
    tree = _TEMPLATES.parse(variant.template)
    for node in tree.find_all((nodes.Filter, nodes.Name, nodes.Const)):
        name = node.value if isinstance(node, nodes.Const) else node.name
        if isinstance(name, str) and name in _CHANCE:
            return False
    return True


def render(
    variant: Variant,
    template: Template | None,
    traits: dict[str, Any],
    items: list[dict[str, Any]] | None = None,
) -> Any:
    """The variant's content: its template (``compile_template``) rendered with ``traits`` (and
    a recommendation's ``items``; sandboxed, HTML-escaped) as ``html`` beside the JSON payload's
    keys, else the payload."""
    if template is None:
        return variant.content
    try:
        html = template.render(**traits, traits=traits, items=items or [])
    except Exception as exc:  # the sandbox's SecurityError, a division by zero, …: never a 500
        _failed(variant.key, f"{type(exc).__name__}: {exc}")
        html = ""
    return {"html": html, **(variant.content or {})} if isinstance(variant.content, dict) else html


def state_key(placement: str) -> str:
    """What API processes serve: the placement's learned state (on a spool of several
    partitions, the merge of the partitions' states)."""
    return f"{{pol:{placement}}}"


def partition_state_key(placement: str, partition: int, count: int) -> str:
    """What the reward worker of one spool partition learned: the served state itself on a
    one-partition spool, else beside it (the same slot: one script publishes their merge)."""
    return state_key(placement) if count == 1 else f"{{pol:{placement}}}:part:{partition}"


def learned_keys(client: redis.Redis, placement: str) -> list[str]:
    """Every key of what a placement learned (one slot: one DEL)."""
    count = layout_of(client).count
    parts = [f"{{pol:{placement}}}:part:{p}" for p in range(count)] if count > 1 else []
    return [state_key(placement), f"{{pol:{placement}}}:sources", changes_key(placement), *parts]


def placements(client: redis.Redis) -> dict[str, Placement]:
    """Every stored placement that still loads (one saved before a check refused it is left
    out, with a log line, rather than breaking every reader)."""
    found = {}
    for key, raw in client.hgetall(DEFS).items():
        try:
            found[key.decode()] = PLACEMENT.decode(raw)
        except msgspec.MsgspecError as exc:
            if key not in _SKIPPED:
                log.error("placement skipped", extra={"placement": key.decode(), "error": str(exc)})
            _SKIPPED.add(key)
    return found


_SKIPPED: set[bytes] = set()  # placements logged as skipped by this process


def put_placement(client: redis.Redis, key: str, placement: Placement) -> bool:
    """Create or replace a placement; True if it changed. Learned state is kept for the
    variants that still exist (the reward worker remaps it by variant key)."""
    current = client.hget(DEFS, key)
    if current is None:  # a new placement learns from scratch (see ``delete_placement``)
        client.delete(*learned_keys(client, key))
    else:
        try:
            before = PLACEMENT.decode(current)
        except msgspec.MsgspecError:  # a definition that no longer loads: replace it
            before = None
        if before and msgspec.structs.replace(before, revision=placement.revision) == placement:
            return False
    revision = int(client.incr(VERSION))
    client.hset(
        DEFS, key, msgspec.json.encode(msgspec.structs.replace(placement, revision=revision))
    )
    client.incr(VERSION)  # readers see the new definition on this bump
    return True


def delete_placement(client: redis.Redis, key: str) -> bool:
    """Delete a placement: its definition (one ``{plc}`` transaction: readers stop serving it
    at the version bump), then what it learned. The two live in different slots, so they are
    not one transaction: a learned state left behind (a crash between the two, or a reward
    worker saving a batch it began before the delete) is dropped when a placement of that key
    is created again (``put_placement``), so it can never reach a new placement."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(DEFS, key)
    pipe.hdel(REVS, key)
    pipe.incr(VERSION)
    deleted, *_ = pipe.execute()
    client.delete(*learned_keys(client, key))
    return bool(deleted)
