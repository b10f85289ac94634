"""Which arm a Thompson sampler puts at each position of a list (a slate of ``positions``).

Thompson sampling for a list ranks the arms by one draw from the posterior each and shows the
first ``positions``; the probability that arm *a* lands at position *k* is estimated by doing
that ``draws`` times (batched, from the policy's own random stream). This is the action
distribution Open Bandit Pipeline's ``BernoulliTS.compute_batch_action_dist`` computes, which
off-policy evaluation of a list with positions needs (``bandits.ope.evaluate_positions``).

Examples:
    >>> from bandits.mab import BetaThompson
    >>> ts = BetaThompson(3, seed=7)
    >>> ts.absorb(np.array([0, 1, 2]), np.array([0.9, 0.5, 0.1]), np.full(3, 100.0))
    >>> shares = position_shares(ts, positions=2, draws=2_000)
    >>> shares.shape, [round(float(s), 3) for s in shares.sum(axis=0)]
    ((3, 2), [1.0, 1.0])
    >>> [int(a) for a in shares.argmax(axis=0)]  # the best arm first, the second next
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["PosteriorSampler", "position_shares"]

_CHUNK = 10_000  # draws at a time (fewer with many arms: arms × draws ≤ _CELLS floats)
_CELLS = 1_000_000


class PosteriorSampler(Protocol):
    """A Thompson sampler (``bandits.mab``: ``BetaThompson``, ``GaussianThompson``)."""

    n_arms: int

    def posterior_samples(self, draws: int) -> NDArray[np.float64]: ...


def position_shares(
    policy: PosteriorSampler,
    positions: int,
    draws: int = 100_000,
    progress: Callable[[int], object] | None = None,
) -> NDArray[np.float64]:
    """arms × positions: the share of ``draws`` rankings that put each arm at each position.
    ``progress`` hears how many draws each chunk did."""
    if not 1 <= positions <= policy.n_arms:
        raise ValueError(f"positions must lie in [1, {policy.n_arms}], got {positions}")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    counts = np.zeros((policy.n_arms, positions))
    done = 0
    while done < draws:
        size = min(_CHUNK, max(_CELLS // policy.n_arms, 1), draws - done)
        samples = policy.posterior_samples(size)  # arms × size
        top = np.argpartition(-samples, positions - 1, axis=0)[:positions]
        order = np.argsort(-np.take_along_axis(samples, top, axis=0), axis=0)
        ranked = np.take_along_axis(top, order, axis=0)  # positions × size: arm at each
        for k in range(positions):
            counts[:, k] += np.bincount(ranked[k], minlength=policy.n_arms)
        done += size
        if progress is not None:
            progress(size)
    return counts / draws
