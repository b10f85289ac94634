"""Policies described as data (what an admin API or config file holds) and built from it.

Examples:
    >>> policy = build(PolicySpec(kind="epsilon_greedy", epsilon=0.2), arms=["a", "b"], salt="x")
    >>> policy.kind, policy.n_arms
    ('epsilon_greedy', 2)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from bandits.abtest import ABTest
from bandits.linear import LinearThompson, LinUCB
from bandits.mab import UCB1, BetaThompson, EpsilonGreedy, GaussianThompson
from bandits.policy import Policy
from bandits.revenue import RevenueThompson

__all__ = ["CONTEXTUAL", "DETECTING", "KINDS", "PolicySpec", "build", "remap"]

Kind = Literal[
    "ab",
    "epsilon_greedy",
    "ucb1",
    "thompson",
    "top_two_thompson",
    "gaussian_thompson",
    "revenue_thompson",
    "linucb",
    "linear_thompson",
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
CONTEXTUAL = ("linucb", "linear_thompson")
DETECTING = ("thompson", "top_two_thompson", "revenue_thompson")  # take ``detect_changes``
Share = Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)]


class PolicySpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How a placement chooses: the kind and its parameters (the ones a kind does not use are
    ignored). ``features`` names the context features of contextual kinds.

    Memory: ``window`` (decisions) makes old evidence fade so the policy holds about that many
    decisions' worth (each decision discounts what was learned by 1 − 1/``window``);
    ``discount`` is the same factor given raw. ``detect_changes`` (the Thompson kinds) tests
    each variant's rate for a change and restarts the policy when one moves, at the evidence
    ``change_threshold`` (nats: lower finds changes sooner and raises more false alarms)."""

    kind: Kind = "thompson"
    epsilon: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.1
    alpha: Annotated[float, msgspec.Meta(ge=0.0)] = 1.0
    scale: Annotated[float, msgspec.Meta(gt=0.0)] = 0.5
    ridge: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    top_two_beta: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.5
    prior_sd: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    holdout: Share = 0.0
    burn_in: Annotated[int, msgspec.Meta(ge=0)] = 0
    min_share: Share = 0.0
    discount: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    window: Annotated[int, msgspec.Meta(ge=2, le=100_000_000)] | None = None
    detect_changes: bool = False
    change_threshold: Annotated[float, msgspec.Meta(ge=1.0, le=100.0)] = 10.0
    features: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.window is not None and self.discount != 1.0:
            raise ValueError(
                "`window` must not be given with `discount` (both set the memory: give one), "
                f"got window {self.window} and discount {self.discount}"
            )
        if self.detect_changes and self.kind not in DETECTING:
            raise ValueError(
                f"`detect_changes` must go with kind {', '.join(DETECTING)}, got {self.kind!r}"
            )

    def forgetting(self) -> float:
        """The factor each decision multiplies what was learned by (``window`` or
        ``discount``)."""
        return 1.0 - 1.0 / self.window if self.window is not None else self.discount


def build(
    spec: PolicySpec,
    arms: list[str],
    salt: str,
    weights: list[float] | None = None,
    default: int = 0,
    seed: int | None = None,
) -> Policy:
    """A fresh policy for ``arms`` (variant keys), as ``spec`` says."""
    n = len(arms)
    options: dict[str, Any] = {
        "burn_in": spec.burn_in,
        "min_share": spec.min_share,
        "discount": spec.forgetting(),
        "seed": seed,
    }
    detection = {"detect_changes": spec.detect_changes, "change_threshold": spec.change_threshold}
    if spec.kind == "ab":
        return ABTest(weights or [1.0] * n, salt=salt, holdout=spec.holdout, default=default,
                      **options)  # fmt: skip
    if spec.kind == "epsilon_greedy":
        return EpsilonGreedy(n, epsilon=spec.epsilon, **options)
    if spec.kind == "ucb1":
        return UCB1(n, **options)
    if spec.kind in ("thompson", "top_two_thompson"):
        return BetaThompson(n, top_two=spec.kind == "top_two_thompson", beta=spec.top_two_beta,
                            **detection, **options)  # fmt: skip
    if spec.kind == "gaussian_thompson":
        return GaussianThompson(n, prior_sd=spec.prior_sd, **options)
    if spec.kind == "revenue_thompson":
        return RevenueThompson(n, **detection, **options)
    dims = len(spec.features)
    if dims == 0:
        raise ValueError(f"a {spec.kind} policy needs `features`")
    if spec.kind == "linucb":
        return LinUCB(n, dims, alpha=spec.alpha, ridge=spec.ridge, **options)
    return LinearThompson(n, dims, scale=spec.scale, ridge=spec.ridge, **options)


def remap(
    state: dict[str, Any], old: list[str], new: list[str], ridge: float = 1.0
) -> dict[str, Any]:
    """``state`` (per-arm lists, arm first) for arms ``new`` where it was learned for ``old``:
    arms kept keep what they learned, new arms start from the prior, removed arms are dropped.

    >>> remap({"kind": "ucb1", "n": [3.0, 5.0], "s": [1.0, 2.0]}, ["a", "b"], ["b", "c"])
    {'kind': 'ucb1', 'n': [5.0, 0.0], 's': [2.0, 0.0]}
    """
    if old == new:
        return state
    where = {key: i for i, key in enumerate(old)}
    fresh = {"n": 0.0, "s": 0.0, "q": 0.0, "c": 0.0}
    remapped: dict[str, Any] = {}
    for name, value in state.items():
        if not isinstance(value, list) or len(value) != len(old):
            remapped[name] = value
            continue
        if name == "a_inv":  # a fresh arm's A⁻¹ is the prior's: the identity over the ridge
            prior = (np.eye(len(value[0])) / ridge).tolist() if value else []
            remapped[name] = [value[where[k]] if k in where else prior for k in new]
        elif name == "b":
            zeros = [0.0] * len(value[0]) if value else []
            remapped[name] = [value[where[k]] if k in where else zeros for k in new]
        else:
            remapped[name] = [value[where[k]] if k in where else fresh.get(name, 0.0) for k in new]
    return remapped
