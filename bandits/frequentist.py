"""Frequentist comparisons of a treatment arm with the control, on sufficient statistics.

- ``proportions``: the two-proportion z-test (pooled standard error for the p-value);
- ``means``: Welch's t-test (unequal variances);
- ``cuped``: Welch's test on the metric adjusted by a pre-period covariate (CUPED: the
  variance the covariate explains is removed; θ is pooled over both arms);
- ``sequential``: an always-valid p-value and confidence sequence (mSPRT with a normal
  mixture), valid however often it is looked at;
- ``holm``: Holm's step-down correction when several treatments share a control;
- ``srm``: the sample-ratio-mismatch check (chi-square against the configured weights).

Every comparison reports the absolute difference and the relative lift (treatment / control
− 1) with 95% intervals; the relative one by the delta method.

Examples:
    >>> r = proportions(Sample(10_000, 1_000, 1_000), Sample(10_000, 1_100, 1_100))
    >>> round(r.p_value, 4), round(r.lift, 3)
    (0.0211, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sp

from bandits.stats import Paired, Sample

__all__ = ["Comparison", "cuped", "holm", "means", "proportions", "sequential", "srm"]

DEFAULT_TUNING = 5_000  # units at which the sequential test is tightest (GrowthBook's default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    control: float  # the control's mean
    treatment: float  # the treatment's mean
    difference: float
    difference_ci: tuple[float, float]
    lift: float  # relative: treatment / control - 1
    lift_ci: tuple[float, float]
    p_value: float


def _compare(
    mc: float, vc: float, nc: int, mt: float, vt: float, nt: int, p_value: float, alpha: float
) -> Comparison:
    """Intervals from the means and the per-unit variances of both arms."""
    z = float(sp.norm.ppf(1 - alpha / 2))
    difference = mt - mc
    se = math.sqrt(vt / nt + vc / nc) if nt > 0 and nc > 0 else 0.0
    if mc == 0 or nc == 0 or nt == 0:
        lift, lift_se = 0.0, 0.0
    else:
        lift = mt / mc - 1
        lift_se = math.sqrt(vt / (nt * mc**2) + mt**2 * vc / (nc * mc**4))
    return Comparison(
        control=mc,
        treatment=mt,
        difference=difference,
        difference_ci=(difference - z * se, difference + z * se),
        lift=lift,
        lift_ci=(lift - z * lift_se, lift + z * lift_se),
        p_value=p_value,
    )


def proportions(control: Sample, treatment: Sample, alpha: float = 0.05) -> Comparison:
    """Conversion rates: ``total`` is the number of units that converted."""
    nc, nt = control.n, treatment.n
    pc, pt = control.mean, treatment.mean
    pooled = (control.total + treatment.total) / (nc + nt) if nc + nt else 0.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nt)) if nc and nt else 0.0
    p_value = float(2 * sp.norm.sf(abs(pt - pc) / se)) if se > 0 else 1.0
    return _compare(pc, pc * (1 - pc), nc, pt, pt * (1 - pt), nt, p_value, alpha)


def means(control: Sample, treatment: Sample, alpha: float = 0.05) -> Comparison:
    """Any metric's mean per unit (revenue, items…), by Welch's t-test."""
    return _welch(control.mean, control.variance, control.n,
                  treatment.mean, treatment.variance, treatment.n, alpha)  # fmt: skip


def _welch(
    mc: float, vc: float, nc: int, mt: float, vt: float, nt: int, alpha: float
) -> Comparison:
    if nc <= 1 or nt <= 1:
        return _compare(mc, vc, max(nc, 1), mt, vt, max(nt, 1), 1.0, alpha)
    a, b = vc / nc, vt / nt
    if a + b == 0:
        return _compare(mc, vc, nc, mt, vt, nt, 1.0 if mt == mc else 0.0, alpha)
    t = (mt - mc) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (nc - 1) + b**2 / (nt - 1))
    return _compare(mc, vc, nc, mt, vt, nt, float(2 * sp.t.sf(abs(t), df)), alpha)


def cuped(control: Paired, treatment: Paired, alpha: float = 0.05) -> Comparison:
    """Welch's test on ``post − θ (pre − mean pre)``, θ pooled over both arms. The means are
    the adjusted ones; with an uninformative covariate this is ``means``."""
    both = control + treatment
    theta = both.covariance / both.pre.variance if both.pre.variance > 0 else 0.0
    overall = both.pre.mean

    def adjusted(arm: Paired) -> tuple[float, float]:
        mean = arm.post.mean - theta * (arm.pre.mean - overall)
        var = arm.post.variance + theta**2 * arm.pre.variance - 2 * theta * arm.covariance
        return mean, max(var, 0.0)

    (mc, vc), (mt, vt) = adjusted(control), adjusted(treatment)
    return _welch(mc, vc, control.n, mt, vt, treatment.n, alpha)


def sequential(
    control: Sample,
    treatment: Sample,
    alpha: float = 0.05,
    tuning: int = DEFAULT_TUNING,
    proportion: bool = True,
) -> Comparison:
    """Always-valid p-value and 95% confidence sequence for the difference (mSPRT, normal
    mixture with variance τ² chosen to be tightest near ``tuning`` units): however many
    times it is checked, the chance that a null effect ever shows p < α stays below α. The
    relative lift's interval is the difference's, divided by the control mean."""
    nc, nt = control.n, treatment.n
    mc, mt = control.mean, treatment.mean
    vc = mc * (1 - mc) if proportion else control.variance
    vt = mt * (1 - mt) if proportion else treatment.variance
    if nc == 0 or nt == 0 or vc + vt == 0:
        return _compare(mc, vc, max(nc, 1), mt, vt, max(nt, 1), 1.0, alpha)
    s2 = vc / nc + vt / nt  # variance of the difference estimate
    per_unit = s2 * (nc + nt)
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
    tau2 = rho2 * per_unit
    delta = mt - mc
    log_ratio = 0.5 * math.log(s2 / (s2 + tau2)) + delta**2 * tau2 / (2 * s2 * (s2 + tau2))
    p_value = min(1.0, math.exp(-log_ratio))
    half = math.sqrt(
        2 * s2 * (s2 + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log((s2 + tau2) / s2))
    )
    lift = delta / mc if mc else 0.0
    lift_half = half / abs(mc) if mc else 0.0
    return Comparison(
        control=mc,
        treatment=mt,
        difference=delta,
        difference_ci=(delta - half, delta + half),
        lift=lift,
        lift_ci=(lift - lift_half, lift + lift_half),
        p_value=p_value,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given (each ≥ its raw value, monotone)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def srm(counts: Sequence[int], weights: Sequence[float]) -> float:
    """p-value of the counts per arm under the configured weights (flag below 0.001)."""
    total = sum(counts)
    if total == 0 or len(counts) < 2:
        return 1.0
    shares = [w / sum(weights) for w in weights]
    expected = [total * s for s in shares]
    chi2 = sum((c - e) ** 2 / e for c, e in zip(counts, expected) if e > 0)
    return float(sp.chi2.sf(chi2, len(counts) - 1))
