"""Off-policy evaluation on a logged-bandit file (``decisions.logfile``): how a candidate
policy would have done on rounds another system logged — ``kairos evaluate --log FILE`` and
``POST /v1/evaluate``.

The candidate is the engine's own Thompson sampler (``bandits.mab.BetaThompson``), starting
from a Beta prior per arm (``Prior``: the ZOZOTOWN production prior of the Open Bandit Dataset
is one) or from Beta(1, 1). It may learn from the first ``train_share`` of the rounds (in file
order: each round's reward counts for its arm, whatever the position), and is judged on the
rest: per position, the probability it would put the logged arm there (``bandits.slates``, from
``draws`` rankings of posterior draws) against the logged propensity, by IPS, SNIPS and doubly
robust (``bandits.ope.evaluate_positions``). ``relative`` is each estimate over the mean reward
of the rounds judged: what the Open Bandit Pipeline calls the relative policy value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from bandits.mab import BetaThompson
from bandits.ope import Estimate, evaluate_positions
from bandits.slates import position_shares
from decisions.logfile import Rounds

__all__ = ["POLICIES", "Prior", "evaluate_log", "policy_with_prior"]

POLICIES = ("thompson",)


class Prior(msgspec.Struct, forbid_unknown_fields=True):
    """Beta(alpha[a], beta[a]) for each arm a before any evidence. Each is at least 1: the
    sampler holds Beta(1 + successes, 1 + failures), so a prior is pseudo-counts on Beta(1, 1)."""

    alpha: Annotated[list[Annotated[float, msgspec.Meta(ge=1.0)]], msgspec.Meta(min_length=1)]
    beta: Annotated[list[Annotated[float, msgspec.Meta(ge=1.0)]], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        if len(self.alpha) != len(self.beta):
            raise ValueError(f"alpha has {len(self.alpha)} arms, beta {len(self.beta)}")


def policy_with_prior(n_arms: int, prior: Prior | None, seed: int) -> BetaThompson:
    """A Thompson sampler over ``n_arms`` holding ``prior`` as its evidence (none: Beta(1, 1))."""
    policy = BetaThompson(n_arms, seed=seed)
    if prior is not None:
        if len(prior.alpha) != n_arms:
            raise ValueError(f"the prior has {len(prior.alpha)} arms, the log {n_arms}")
        successes = np.asarray(prior.alpha) - 1.0
        n = successes + np.asarray(prior.beta) - 1.0
        policy.load({"pulls": float(n.sum()), "n": n, "s": successes, "q": successes})
    return policy


def evaluate_log(
    rounds: Rounds,
    policy: Literal["thompson"] = "thompson",
    prior: Prior | None = None,
    draws: int = 100_000,
    seed: int = 7,
    train_share: float = 0.0,
    level: float = 0.95,
    resamples: int = 1000,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """The estimates for the candidate on ``rounds`` (see the module). Raises ``ValueError``
    when the prior and the log disagree on the arms."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    n_arms = len(prior.alpha) if prior is not None else int(rounds.arms.max()) + 1
    if rounds.arms.max() >= n_arms:
        raise ValueError(f"the log shows arm {int(rounds.arms.max())}, the prior has arms 0 to "
                         f"{n_arms - 1}")  # fmt: skip
    candidate = policy_with_prior(n_arms, prior, seed)
    split = int(rounds.size * train_share)
    if split:
        train = rounds.log(slice(0, split))
        candidate.absorb(train.arms, train.rewards, train.counts)
    test = rounds.log(slice(split, None))
    slots = int(rounds.positions.max()) + 1
    shares = position_shares(candidate, slots, draws, progress)
    estimates = evaluate_positions(shares, test, level, resamples, seed)
    mean = float(test.rewards.mean()) if test.size else float("nan")
    return {
        "policy": policy,
        "prior": prior is not None,
        "arms": n_arms,
        "positions": slots,
        "draws": draws,
        "seed": seed,
        "rounds": {"train": split, "evaluate": test.size},
        "context": len(rounds.context_names),
        "mean_reward": _round(mean),
        "estimates": {name: _shown(e, mean) for name, e in estimates.items()},
    }


def _shown(estimate: Estimate, mean: float) -> dict[str, Any]:
    relative = estimate.value / mean if mean else float("nan")
    return {
        "value": _round(estimate.value),
        "low": _round(estimate.low),
        "high": _round(estimate.high),
        "relative": _round(relative),
        "decisions": estimate.n,
        "effective_decisions": round(estimate.effective_n, 1),
    }


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 6)
