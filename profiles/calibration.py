"""Calibration of the learner's scores: a score of 0.7 should come true seven times in ten.

An online logistic regression ranks people well long before its probabilities are right: it
starts at 0.5 for everyone, moves its intercept slowly, and labels come days late. Segments and
journeys compare scores with thresholds ("churn above 0.7"), so each model's raw score goes
through a ``Calibrator`` learned on the same delayed labels.

``Calibrator`` is isotonic regression over a histogram: the raw scores fall in ``bins``
equal-width bins, each keeping its (decayed) examples, positives and sum of raw scores, so that
the state is a few hundred numbers whatever the traffic, and old evidence fades after about
``memory`` labelled examples. The map is the pool-adjacent-violators fit of the bins' rates
(each shrunk a little towards its mean raw score), joined by straight lines between the
blocks' centres and bent towards 0 and 1 beyond the outermost ones: strictly increasing, so it
never reorders two people scored at the same time, and ROC AUC stays the classifier's. Until
it has ``warm_up`` labelled examples it passes raw scores through; then the map is refitted
every ``refit_every`` examples.

It learns from the raw score the classifier gives the example *when the label is learned*,
just before the classifier learns it: the map so describes the classifier as it is, not as it
was when the prediction was made days ago (it moves the most exactly while it is new).

``expected_calibration_error`` is how far predictions are from what happened: over 10
equal-width bins of prediction, the gap between mean prediction and observed rate, weighted by
each bin's share of the examples.

Examples:
    >>> calibrator = Calibrator(warm_up=100)
    >>> for i in range(2_000):  # a classifier whose raw 0.8 comes true 4 times in 10
    ...     raw = (i % 10) / 10
    ...     calibrator.learn(raw, (i // 10) % 10 < raw * 5)
    >>> round(calibrator(0.8), 2)
    0.4
    >>> calibrator(0.3) < calibrator(0.31) < calibrator(0.8)
    True
    >>> round(expected_calibration_error([(0.8, True), (0.8, False)]), 2)
    0.3
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

import numpy as np

__all__ = ["Calibrator", "expected_calibration_error"]

_PRIOR = 1.0  # pseudo-examples at its mean raw score each bin's rate is shrunk with


class Calibrator:
    """Monotone map from raw scores to probabilities, learned online (see the module). The map
    is refitted every ``refit_every`` examples learned, so it is a function of what was learned
    in order (a learner restored from its redo log maps as one that never stopped)."""

    def __init__(
        self, bins: int = 20, memory: int = 2_000, warm_up: int = 200, refit_every: int = 20
    ):
        if bins < 2 or memory < 1 or warm_up < 0 or refit_every < 1:
            raise ValueError(
                f"bins must be at least 2, memory at least 1, warm_up at least 0, refit_every "
                f"at least 1; got {bins}, {memory}, {warm_up}, {refit_every}"
            )
        self.bins = bins
        self.memory = memory
        self.warm_up = warm_up
        self.refit_every = refit_every
        # Per bin: examples, positives and the sum of raw scores, each weighted by ``_scale``
        # at the time it came (the weights grow instead of the old ones shrinking: O(1)).
        self._n = [0.0] * bins
        self._positives = [0.0] * bins
        self._raw = [0.0] * bins
        self._scale = 1.0
        self._seen = 0
        self._xs: list[float] = []
        self._ys: list[float] = []

    @property
    def active(self) -> bool:
        """Whether it maps scores yet (else they pass as they are)."""
        return bool(self._xs)

    def learn(self, raw: float, label: bool) -> None:
        self._scale /= 1.0 - 1.0 / self.memory
        if self._scale > 1e100:  # (renormalise: the same weights, smaller numbers)
            for values in (self._n, self._positives, self._raw):
                values[:] = [v / self._scale for v in values]
            self._scale = 1.0
        b = min(max(int(raw * self.bins), 0), self.bins - 1)
        self._n[b] += self._scale
        self._positives[b] += self._scale * float(label)
        self._raw[b] += self._scale * raw
        self._seen += 1
        if self._seen >= self.warm_up and (
            self._seen == self.warm_up or self._seen % self.refit_every == 0
        ):
            self._fit()

    def __call__(self, raw: float) -> float:
        xs, ys = self._xs, self._ys
        if not xs:
            return raw
        if raw <= xs[0]:
            return ys[0] * raw / xs[0] if xs[0] > 0 else ys[0]
        if raw >= xs[-1]:
            top = xs[-1]
            return ys[-1] + (1.0 - ys[-1]) * (raw - top) / (1.0 - top) if top < 1 else 1.0
        i = bisect_right(xs, raw)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (raw - x0) / (x1 - x0)

    def _fit(self) -> None:
        """Pool adjacent violators over the bins that have examples: blocks of (weight, sum of
        raw scores, sum of positives) whose rates strictly increase."""
        blocks: list[list[float]] = []
        prior = _PRIOR * self._scale
        for n, raw, positives in zip(self._n, self._raw, self._positives):
            if n <= 1e-9 * self._scale:
                continue
            mean = raw / n
            blocks.append([n + prior, raw + prior * mean, positives + prior * mean])
            while len(blocks) > 1 and _rate(blocks[-2]) >= _rate(blocks[-1]):
                w, r, p = blocks.pop()
                blocks[-1][0] += w
                blocks[-1][1] += r
                blocks[-1][2] += p
        self._xs = [r / w for w, r, _ in blocks]
        self._ys = [min(max(p / w, 1e-6), 1 - 1e-6) for w, _, p in blocks]


def _rate(block: list[float]) -> float:
    return block[2] / block[0]


def expected_calibration_error(pairs: Iterable[tuple[float, bool]], bins: int = 10) -> float:
    """Σ over equal-width bins of |Σ predictions − Σ labels|, over the examples (0: none)."""
    gaps = np.zeros(bins)
    count = 0
    for p, y in pairs:
        gaps[min(max(int(p * bins), 0), bins - 1)] += p - float(y)
        count += 1
    return float(np.abs(gaps).sum() / count) if count else 0.0
