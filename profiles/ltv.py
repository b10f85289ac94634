"""Customer lifetime value: BG/NBD for how often a customer buys and whether they are still a
customer, Gamma-Gamma for how much they spend; both fitted by maximum likelihood.

Inputs are the usual RFM summaries, per customer, in one time unit (days, weeks…):

- ``frequency``: repeat purchases (purchase periods after the first);
- ``recency``: time from the first purchase to the last (0 when there is no repeat);
- ``T``: time from the first purchase to the end of the observation;
- ``monetary_value``: the mean value of the repeat purchases (Gamma-Gamma; customers with
  ``frequency > 0`` only).

References: Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative to
the Pareto/NBD Model"; Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value".
The API follows the ``lifetimes`` package: fitted parameters end in ``_``, every method takes
arrays and returns an array.

Examples:
    >>> import numpy as np
    >>> bg = BetaGeo().fit(np.array([2, 1, 0, 0, 4]), np.array([30.4, 1.7, 0, 0, 35.0]),
    ...                    np.array([38.9, 38.9, 38.9, 38.9, 38.0]))
    >>> bool(bg.probability_alive(np.array([0]), np.array([0.0]), np.array([38.9]))[0] == 1.0)
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

__all__ = ["BetaGeo", "GammaGamma", "NotFitted", "lifetime_value"]

Array = NDArray[np.float64]
_LOG_BOUND = 15.0


class NotFitted(RuntimeError):
    pass


def _arrays(*values: ArrayLike) -> list[Array]:
    arrays = [np.asarray(v, dtype=float) for v in values]
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"the inputs must have one shape, got {[a.shape for a in arrays]}")
    return arrays


def _fit(negative_ll: Any, start: Array) -> Array:
    """Minimise over log-parameters (they must stay positive); return the parameters. The
    search stays within e^±15 (data are scaled to ~1) and treats overflow as infinitely bad."""

    def guarded(log_params: Array) -> float:
        if np.any(np.abs(log_params) > _LOG_BOUND):
            return np.inf
        with np.errstate(all="ignore"):
            value = float(negative_ll(log_params))
        return value if np.isfinite(value) else np.inf

    found = minimize(guarded, np.log(start), method="Nelder-Mead",
                     options={"maxiter": 10_000, "xatol": 1e-8, "fatol": 1e-10})  # fmt: skip
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(start)
    polished = minimize(guarded, found.x, method="L-BFGS-B", bounds=bounds)  # near the optimum
    if polished.success and polished.fun <= found.fun:
        found = polished
    if not np.all(np.isfinite(found.x)) or not np.isfinite(found.fun):
        raise ArithmeticError(f"the fit did not converge: {found.message}")
    return np.exp(found.x)


class BetaGeo:
    """BG/NBD: while alive, a customer buys at a Gamma(r, α)-distributed rate; after each
    purchase they drop out with a Beta(a, b)-distributed probability.

    ``penalizer`` adds ``penalizer × Σ parameters²`` to the negative log-likelihood (0: the
    plain maximum-likelihood fit, as published)."""

    def __init__(self, penalizer: float = 0.0):
        self.penalizer = penalizer
        self.r_ = self.alpha_ = self.a_ = self.b_ = float("nan")

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> BetaGeo:  # noqa: N803
        x, t_x, t = _arrays(frequency, recency, T)
        if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > t + 1e-9):
            raise ValueError("need frequency ≥ 0 and 0 ≤ recency ≤ T for every customer")
        scale = float(t.max()) or 1.0  # fit on times scaled to ~1 (steadier), then scale back

        def negative(log_params: Array) -> float:
            r, alpha, a, b = np.exp(log_params)
            value = -_bg_log_likelihood(r, alpha, a, b, x, t_x / scale, t / scale).sum()
            return float(value / len(x) + self.penalizer * np.sum(np.exp(log_params) ** 2))

        r, alpha, a, b = _fit(negative, np.array([1.0, 1.0, 1.0, 1.0]))
        self.r_, self.alpha_, self.a_, self.b_ = float(r), float(alpha * scale), float(a), float(b)
        return self

    @property
    def params_(self) -> dict[str, float]:
        return {"r": self.r_, "alpha": self.alpha_, "a": self.a_, "b": self.b_}

    def _params(self) -> tuple[float, float, float, float]:
        if np.isnan(self.r_):
            raise NotFitted("fit() the model first")
        return self.r_, self.alpha_, self.a_, self.b_

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> float:  # noqa: N803
        x, t_x, t = _arrays(frequency, recency, T)
        return float(_bg_log_likelihood(*self._params(), x, t_x, t).sum())

    def probability_alive(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,  # noqa: N803
    ) -> Array:
        """P(still a customer at T | the customer's history)."""
        r, alpha, a, b = self._params()
        x, t_x, t = _arrays(frequency, recency, T)
        return 1.0 / (1.0 + _dropout_odds(r, alpha, a, b, x, t_x, t))

    def conditional_expected_purchases(
        self,
        t: ArrayLike,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,  # noqa: N803
    ) -> Array:
        """Expected purchases in the next ``t`` time units, given the customer's history."""
        r, alpha, a, b = self._params()
        x, t_x, big_t = _arrays(frequency, recency, T)
        horizon = np.broadcast_to(np.asarray(t, dtype=float), x.shape)
        ratio = (alpha + big_t) / (alpha + big_t + horizon)
        hyper = hyp2f1(r + x, b + x, a + b + x - 1, horizon / (alpha + big_t + horizon))
        numerator = (a + b + x - 1) / (a - 1) * (1 - ratio ** (r + x) * hyper)
        return np.asarray(numerator / (1.0 + _dropout_odds(r, alpha, a, b, x, t_x, big_t)))

    def expected_purchases(self, t: ArrayLike) -> Array:
        """Expected purchases in ``t`` time units of a customer just acquired."""
        r, alpha, a, b = self._params()
        horizon = np.asarray(t, dtype=float)
        hyper = hyp2f1(r, b, a + b - 1, horizon / (alpha + horizon))
        return np.asarray((a + b - 1) / (a - 1) * (1 - (alpha / (alpha + horizon)) ** r * hyper))


def _bg_log_likelihood(
    r: float, alpha: float, a: float, b: float, x: Array, t_x: Array, t: Array
) -> Array:
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    stayed = -(r + x) * np.log(alpha + t)
    with np.errstate(divide="ignore", invalid="ignore"):  # x = 0 rows are masked out
        left = np.where(
            x > 0, np.log(a) - np.log(b + x - 1) - (r + x) * np.log(alpha + t_x), -np.inf
        )
    return np.asarray(common + np.logaddexp(stayed, left))


def _dropout_odds(
    r: float, alpha: float, a: float, b: float, x: Array, t_x: Array, t: Array
) -> Array:
    """P(dropped out) / P(alive) given the history (0 for customers without a repeat)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = a / (b + x - 1) * ((alpha + t) / (alpha + t_x)) ** (r + x)
    return np.where(x > 0, odds, 0.0)


class GammaGamma:
    """Gamma-Gamma: each customer's purchase values are Gamma(p, ν) around their own mean, and
    ν varies across customers as Gamma(q, γ). Fit on customers with repeat purchases; assumes
    spend does not depend on how often they buy (check that the two barely correlate)."""

    def __init__(self, penalizer: float = 0.0):
        self.penalizer = penalizer
        self.p_ = self.q_ = self.v_ = float("nan")

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGamma:
        x, m = _arrays(frequency, monetary_value)
        keep = x > 0
        x, m = x[keep], m[keep]
        if len(x) == 0 or np.any(m <= 0):
            raise ValueError("need customers with repeat purchases and a positive mean value")
        scale = float(np.median(m))  # fit on values scaled to ~1, then scale back

        def negative(log_params: Array) -> float:
            p, q, v = np.exp(log_params)
            value = -_gg_log_likelihood(p, q, v, x, m / scale).sum()
            return float(value / len(x) + self.penalizer * np.sum(np.exp(log_params) ** 2))

        p, q, v = _fit(negative, np.array([1.0, 1.0, 1.0]))
        self.p_, self.q_, self.v_ = float(p), float(q), float(v * scale)
        return self

    @property
    def params_(self) -> dict[str, float]:
        return {"p": self.p_, "q": self.q_, "v": self.v_}

    def conditional_expected_average_profit(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> Array:
        """Expected mean purchase value of each customer (the population mean for those
        without repeat purchases)."""
        if np.isnan(self.p_):
            raise NotFitted("fit() the model first")
        p, q, v = self.p_, self.q_, self.v_
        x, m = _arrays(frequency, monetary_value)
        m = np.where(x > 0, m, 0.0)
        return np.asarray(p * (v + x * m) / (p * x + q - 1))


def _gg_log_likelihood(p: float, q: float, v: float, x: Array, m: Array) -> Array:
    return np.asarray(
        gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v)
        + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(v + m * x)
    )  # fmt: skip


def lifetime_value(
    bg: BetaGeo,
    gg: GammaGamma,
    horizon: float,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,  # noqa: N803
    monetary_value: ArrayLike,
) -> tuple[Array, Array]:
    """(expected purchases, expected value) of each customer over the next ``horizon``
    (undiscounted: purchases × expected mean value)."""
    purchases = bg.conditional_expected_purchases(horizon, frequency, recency, T)
    return purchases, purchases * gg.conditional_expected_average_profit(frequency, monetary_value)
