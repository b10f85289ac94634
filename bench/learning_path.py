"""Simulated traffic through the path a placement's policy takes in the engine, in process.

What the engine does, and what this loop does the same way:

- the policy is built from a ``Placement`` (``decisions.placements.policy_for``), as the API
  processes and the reward worker build it, so a spec the API refuses cannot be simulated;
- an API process chooses with the *served* policy: the state the reward worker last saved,
  encoded as the ``Learned`` document ``{pol:<key>}`` holds and loaded back, reloaded every
  ``refresh`` decisions (the catalog refreshes every 0.5 s);
- the reward worker's trainer counts each decision as a pull when it reads it and adds a reward
  when the click or order comes, ``lag`` decisions later (geometric, mean ``mean_lag``): the
  split ``pull`` / ``reward`` the worker uses, never ``update``;
- changes the policy finds (``take_changes``) are taken after each step, as the worker takes
  them to log them.

Not simulated: the spool, Redis and several partitions (the reward worker tests cover them);
visitors are new for every decision.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import msgspec
import numpy as np
from numpy.typing import NDArray

from bandits.policy import Policy
from bandits.simulate import Environment
from bandits.spec import PolicySpec
from decisions.placements import LEARNED, Learned, Placement, Reward, Variant, policy_for

__all__ = ["Path", "Trace", "placement_for", "run"]

KEY = "sim"


@dataclass(frozen=True)
class Path:
    """How decisions, rewards and reloads interleave."""

    refresh: int = 100  # decisions between two reloads of the served state
    mean_lag: float = 30.0  # decisions between a choice and its reward, on average


@dataclass
class Trace:
    """One run: per round, the expected reward of the arm shown and of the best arm; the
    rounds at which the policy found a change."""

    gained: NDArray[np.float64]
    best: NDArray[np.float64]
    changes: list[int] = field(default_factory=list)

    @property
    def regret(self) -> NDArray[np.float64]:
        """Cumulative expected regret against always showing the best arm."""
        return np.cumsum(self.best - self.gained)

    def ratio(self, start: int = 0, end: int | None = None) -> float:
        """Expected reward over the oracle's, over rounds [start, end)."""
        return float(self.gained[start:end].sum() / self.best[start:end].sum())


def placement_for(spec: PolicySpec, arms: int, revenue: bool = False) -> Placement:
    reward = Reward(kind="revenue", event="Order Completed") if revenue else Reward()
    return Placement(variants=[Variant(key=f"v{i}") for i in range(arms)], policy=spec,
                     reward=reward)  # fmt: skip


def _served(placement: Placement, trainer: Policy, seed: int) -> Policy:
    spec = placement.policy
    learned = Learned(arms=placement.arms(), kind=spec.kind, features=spec.features, rev=0,
                      applied="", state=trainer.state())  # fmt: skip
    return policy_for(KEY, placement, LEARNED.decode(msgspec.json.encode(learned)), seed=seed)


def run(
    placement: Placement, env: Environment, rounds: int, seed: int, path: Path = Path()
) -> Trace:
    """``rounds`` decisions of ``placement``'s policy in ``env``, seeded."""
    rng = np.random.default_rng(seed)
    trainer = policy_for(KEY, placement, None, seed=seed)
    served = trainer
    contextual = trainer.contextual
    due: dict[int, list[tuple[int, float, NDArray[np.float64] | None]]] = defaultdict(list)
    gained, best = np.zeros(rounds), np.zeros(rounds)
    changes: list[int] = []
    for t in range(rounds):
        for arm, value, x in due.pop(t, []):
            trainer.reward(arm, value, x)
        if t % path.refresh == 0:
            served = _served(placement, trainer, seed=seed * 1_000_003 + t)
        x = env.context(rng)
        expected = env.expected(x, t)
        arm, _ = served.choose(x if contextual else None, rng)
        trainer.pull(arm, x if contextual else None)
        value = env.outcome(arm, x, t, rng)
        if value:
            lag = int(rng.geometric(1.0 / path.mean_lag))
            due[t + lag].append((arm, value, x if contextual else None))
        gained[t], best[t] = expected[arm], expected.max()
        if trainer.take_changes():
            changes.append(t)
    return Trace(gained, best, changes)
