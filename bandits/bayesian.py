"""Bayesian comparisons of a treatment arm with the control.

- ``beta_binomial``: conversion rates with Beta priors (default Beta(1, 1)). The chance that the
  treatment beats the control is exact (Evan Miller's closed form, integer posteriors); the
  expected loss and the credible interval of the relative lift come from seeded posterior draws.
- ``normal``: a metric's mean per unit, normal posteriors (flat prior): all closed form.

``expected_loss`` is what choosing the treatment costs, on average over the posterior, if it is
in fact worse: E[max(control − treatment, 0)], in the metric's units.

Examples:
    >>> r = beta_binomial(Sample(10_000, 1_000, 1_000), Sample(10_000, 1_100, 1_100))
    >>> round(r.chance_to_beat_control, 4)
    0.9895
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sp
from scipy.special import betaln

from bandits.stats import Sample

__all__ = ["Posterior", "beta_binomial", "normal"]


@dataclass(frozen=True, slots=True)
class Posterior:
    chance_to_beat_control: float
    expected_loss: float
    lift: float  # the posterior mean of the relative lift
    lift_ci: tuple[float, float]  # its 95% credible interval


def _beats(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X2 > X1) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2): exact when a2 is an integer."""
    if float(a2).is_integer() and a2 <= 1_000_000:
        i = np.arange(int(a2), dtype=float)
        terms = betaln(a1 + i, b1 + b2) - np.log(b2 + i) - betaln(1 + i, b2) - betaln(a1, b1)
        return float(np.clip(np.exp(terms).sum(), 0.0, 1.0))
    grid = np.linspace(0, 1, 20_001)  # otherwise: the integral of f2 · F1 on a fine grid
    return float(np.trapezoid(sp.beta.pdf(grid, a2, b2) * sp.beta.cdf(grid, a1, b1), grid))


def beta_binomial(
    control: Sample,
    treatment: Sample,
    prior: tuple[float, float] = (1.0, 1.0),
    draws: int = 200_000,
    seed: int = 7,
) -> Posterior:
    """``total`` is the number of units that converted."""
    a1, b1 = prior[0] + control.total, prior[1] + control.n - control.total
    a2, b2 = prior[0] + treatment.total, prior[1] + treatment.n - treatment.total
    rng = np.random.default_rng(seed)
    pc, pt = rng.beta(a1, b1, draws), rng.beta(a2, b2, draws)
    lift = pt / pc - 1
    low, high = np.quantile(lift, [0.025, 0.975])
    return Posterior(_beats(a1, b1, a2, b2), float(np.maximum(pc - pt, 0).mean()),
                     float(lift.mean()), (float(low), float(high)))  # fmt: skip


def normal(control: Sample, treatment: Sample) -> Posterior:
    """Means per unit; the posterior of each mean is N(mean, variance / n)."""
    if control.n <= 1 or treatment.n <= 1:
        return Posterior(0.5, 0.0, 0.0, (0.0, 0.0))
    mc, mt = control.mean, treatment.mean
    vc, vt = control.variance / control.n, treatment.variance / treatment.n
    delta, sd = mt - mc, math.sqrt(vc + vt)
    if sd == 0:
        return Posterior(float(delta > 0) if delta else 0.5, max(-delta, 0.0), 0.0, (0.0, 0.0))
    chance = float(sp.norm.cdf(delta / sd))
    loss = float(sd * sp.norm.pdf(delta / sd) - delta * sp.norm.cdf(-delta / sd))
    if mc == 0:
        return Posterior(chance, loss, 0.0, (0.0, 0.0))
    lift = mt / mc - 1
    lift_sd = math.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    return Posterior(chance, loss, lift, (lift - 1.96 * lift_sd, lift + 1.96 * lift_sd))
