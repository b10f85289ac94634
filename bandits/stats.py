"""Sufficient statistics of an experiment arm: frozen, mergeable, what SQL returns.

``Sample`` holds a metric's count, sum and sum of squares per unit; ``Paired`` adds a pre-period
covariate (its sum, sum of squares and the cross sum) for CUPED. Adding two statistics merges
them (shards, days, segments), so results can be computed from any partition of the data.
Degenerate inputs (n ≤ 1) give defined values (variance 0), never an exception.

Examples:
    >>> a = Sample(n=4, total=2.0, squares=2.0)  # a conversion metric: 2 of 4 converted
    >>> a.mean, round(a.variance, 4)
    (0.5, 0.3333)
    >>> (a + Sample(6, 1.0, 1.0)).n
    10
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Paired", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    """A metric over ``n`` units: the sum of its values and of their squares."""

    n: int
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance (0 for n ≤ 1)."""
        if self.n <= 1:
            return 0.0
        return max((self.squares - self.total**2 / self.n) / (self.n - 1), 0.0)

    def __add__(self, other: Sample) -> Sample:
        return Sample(self.n + other.n, self.total + other.total, self.squares + other.squares)


@dataclass(frozen=True, slots=True)
class Paired:
    """A metric (``post``) and a covariate measured before the experiment (``pre``) for the
    same units, with the sum of their products: what CUPED needs."""

    post: Sample
    pre: Sample
    cross: float  # Σ post × pre

    @property
    def n(self) -> int:
        return self.post.n

    @property
    def covariance(self) -> float:
        n = self.post.n
        if n <= 1:
            return 0.0
        return (self.cross - self.post.total * self.pre.total / n) / (n - 1)

    def __add__(self, other: Paired) -> Paired:
        return Paired(self.post + other.post, self.pre + other.pre, self.cross + other.cross)
