"""The learner's models: a shared feature scaler, one River classifier per target, and how
well each is doing.

Features arrive as numbers (``profiles.history.NUMERIC``) and one-hot flags (device, source,
segments). ``Scaler`` standardises the numbers with River's ``StandardScaler``, fitted on every
moment the learner predicts for (so all three targets see the same scale), and passes the flags
as they are. Its statistics (per feature a count, a mean and a sum of squared deviations) pool
exactly (``Scaler.pooled``), so scalers fitted on parts of the stream (the spool's partitions)
make together the scaler one would have fitted on all of it. Each target's classifier is
chosen by name in the config file's ``[models]`` section: ``logistic`` (the default: online
logistic regression), ``forest`` (adaptive random forest) or ``tree`` (Hoeffding adaptive
tree).

Quality is measured prequentially: each example's label is compared with the prediction made
for it *before* the model learned from it (the prediction stored when the example was made), over
a rolling window: ROC AUC, log loss, expected calibration error (ECE) and calibration by decile
(mean prediction against the observed rate in each tenth of the probability range). Each
model's raw score goes through a ``profiles.calibration.Calibrator`` (``[models] calibrate``,
on by default), learned on the same delayed labels; the quality of the raw scores, as they
were when predicted, is kept beside (``uncalibrated``), so the two compare on the same examples.

Examples:
    >>> scale, model = Scaler(["views"]), Model("conversion")
    >>> for i in range(300):
    ...     z = scale({"views": float(i % 10), "device=mobile": 1.0}, learn=True)
    ...     model.learn(z, i % 10 > 6, model.predict(z))
    >>> keen, idle = scale({"views": 9.0}), scale({"views": 0.0})
    >>> model.predict(keen) > model.predict(idle)
    True

    Two halves of a stream, pooled, scale as the whole does:

    >>> odd, even, whole = Scaler(["v"]), Scaler(["v"]), Scaler(["v"])
    >>> for i in range(10):
    ...     _ = (odd if i % 2 else even)({"v": float(i)}, learn=True), whole({"v": i}, learn=True)
    >>> round(odd({"v": 7.0}, others=even.stats())["v"], 9) == round(whole({"v": 7.0})["v"], 9)
    True
    >>> round(Scaler.pooled(["v"], [odd, even])({"v": 7.0})["v"], 9) == round(
    ...     whole({"v": 7.0})["v"], 9)
    True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from river import forest, linear_model, metrics, optim, preprocessing, tree
from river.base import Classifier

from profiles.calibration import Calibrator, expected_calibration_error

__all__ = ["ESTIMATORS", "TARGETS", "Model", "ModelSettings", "Quality", "Scaler", "Stats"]

TARGETS = ("conversion", "conversion_session", "churn")

ESTIMATORS: dict[str, Callable[[], Classifier]] = {
    "logistic": lambda: linear_model.LogisticRegression(optimizer=optim.SGD(0.005), l2=1e-4),
    "forest": lambda: forest.ARFClassifier(n_models=10, seed=7),
    "tree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=7),
}
_EPS = 1e-15
Stats = dict[str, tuple[float, float, float]]  # feature -> (count, mean, squared deviations)


class Scaler:
    """Standardise the ``numeric`` features; pass every other (a one-hot flag) as it is.

    ``others``: the pooled statistics of scalers fitted elsewhere (other partitions): the
    numbers are then scaled by the pool of those and this one's, as one scaler fitted on
    everything would scale them.
    """

    def __init__(self, numeric: Iterable[str]):
        self.numeric = frozenset(numeric)
        self.scaler = preprocessing.StandardScaler()

    def __call__(
        self, x: dict[str, float], learn: bool = False, others: Stats | None = None
    ) -> dict[str, float]:
        numbers = {k: v for k, v in x.items() if k in self.numeric}
        if learn:
            self.scaler.learn_one(numbers)
        scaled: dict[str, float] = (
            self._pooled(numbers, others) if others else self.scaler.transform_one(numbers)
        )
        scaled.update((k, v) for k, v in x.items() if k not in self.numeric)
        return scaled

    def stats(self) -> Stats:
        s = self.scaler
        return {k: (float(n), s.means[k], s.vars[k] * n) for k, n in s.counts.items()}

    @classmethod
    def pooled(cls, numeric: Iterable[str], scalers: list[Scaler]) -> Scaler:
        """One scaler holding the pooled statistics of ``scalers``; the one that has seen
        anything, itself, when it is the only one (its numbers exactly)."""
        seen = [s for s in scalers if s.scaler.counts]
        if len(seen) == 1:
            return seen[0]
        merged = cls(numeric)
        for k, (n, mean, squares) in pool(s.stats() for s in seen).items():
            merged.scaler.counts[k] = n
            merged.scaler.means[k] = mean
            merged.scaler.vars[k] = squares / n if n else 0.0
        return merged

    def _pooled(self, numbers: dict[str, float], others: Stats) -> dict[str, float]:
        s = self.scaler
        scaled = {}
        for k, value in numbers.items():
            n1 = float(s.counts.get(k, 0))
            n, mean, squares = _add((n1, s.means.get(k, 0.0), s.vars.get(k, 0.0) * n1),
                                    others.get(k, (0.0, 0.0, 0.0)))  # fmt: skip
            var = squares / n if n else 0.0
            scaled[k] = (value - mean) / var**0.5 if var else 0.0
        return scaled


def pool(parts: Iterable[Stats]) -> Stats:
    """Statistics of several streams as those of one (Chan et al.'s parallel variance)."""
    total: Stats = {}
    for stats in parts:
        for k, part in stats.items():
            total[k] = _add(total[k], part) if k in total else part
    return total


def _add(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, ...]:
    (n1, m1, q1), (n2, m2, q2) = a, b
    n = n1 + n2
    if not n:
        return 0.0, 0.0, 0.0
    delta = m2 - m1
    return n, m1 + delta * n2 / n, q1 + q2 + delta * delta * n1 * n2 / n


class Quality:
    """Prequential metrics over the last ``window`` labelled examples."""

    def __init__(self, window: int = 5_000):
        self.window = window
        self.auc = metrics.RollingROCAUC(window_size=window)
        self.recent: deque[tuple[float, bool]] = deque(maxlen=window)
        self.examples = 0
        self.positives = 0

    def update(self, y: bool, p: float) -> None:
        self.auc.update(y, p)
        self.recent.append((p, y))
        self.examples += 1
        self.positives += int(y)

    def log_loss(self) -> float | None:
        if not self.recent:
            return None
        total = sum(-math.log(max(p, _EPS) if y else max(1 - p, _EPS)) for p, y in self.recent)
        return total / len(self.recent)

    def calibration(self) -> list[dict[str, float]]:
        """Per decile of predicted probability that has examples: count, mean prediction,
        observed rate."""
        bins: list[list[float]] = [[0, 0.0, 0.0] for _ in range(10)]
        for p, y in self.recent:
            b = bins[min(int(p * 10), 9)]
            b[0], b[1], b[2] = b[0] + 1, b[1] + p, b[2] + y
        return [
            {"decile": i + 1, "examples": int(n), "predicted": round(s / n, 4),
             "observed": round(o / n, 4)}
            for i, (n, s, o) in enumerate(bins) if n
        ]  # fmt: skip

    def ece(self) -> float | None:
        """Expected calibration error over the window (10 equal-width bins)."""
        return expected_calibration_error(self.recent) if self.recent else None

    def brief(self) -> dict[str, Any]:
        """ROC AUC, log loss and ECE over the window (None before there is any)."""
        loss, ece = self.log_loss(), self.ece()
        have_both = 0 < sum(y for _, y in self.recent) < len(self.recent)
        return {
            "roc_auc": round(self.auc.get(), 4) if have_both else None,
            "log_loss": round(loss, 4) if loss is not None else None,
            "ece": round(ece, 4) if ece is not None else None,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "positives": self.positives,
            "window": len(self.recent),
            **self.brief(),
            "calibration": self.calibration(),
        }


class Model:
    """One target's classifier (on scaled features), its calibrator and its quality: of the
    scores as served (``quality``) and of the raw scores beside them (``raw_quality``)."""

    def __init__(
        self, target: str, estimator: str = "logistic", window: int = 5_000, calibrate: bool = True
    ):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        self.target = target
        self.estimator = estimator
        self.classifier = ESTIMATORS[estimator]()
        self.calibrator: Calibrator | None = Calibrator() if calibrate else None
        self.quality = Quality(window)
        self.raw_quality = Quality(window)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A checkpoint from before calibration: no calibrator yet (one starts learning)."""
        if "calibrator" not in state:
            state["calibrator"] = Calibrator()
            state["raw_quality"] = Quality(state["quality"].window)
        self.__dict__.update(state)

    def raw(self, z: dict[str, float]) -> float:
        """The classifier's own probability, before calibration."""
        return float(self.classifier.predict_proba_one(z).get(True, 0.0))

    def scores(self, z: dict[str, float]) -> tuple[float, float]:
        """(calibrated, raw) for ``z``."""
        raw = self.raw(z)
        return (self.calibrator(raw) if self.calibrator is not None else raw), raw

    def predict(self, z: dict[str, float]) -> float:
        return self.scores(z)[0]

    def learn(self, z: dict[str, float], y: bool, p: float, raw: float | None = None) -> None:
        """Score ``p`` and ``raw`` (served and raw, predicted before the label was known; raw
        unknown for examples made before calibration), then learn ``z`` -> ``y``: the
        calibrator from the classifier's score now, then the classifier."""
        self.quality.update(y, p)
        if raw is not None:
            self.raw_quality.update(y, raw)
        if self.calibrator is not None:
            self.calibrator.learn(self.raw(z), y)
        self.classifier.learn_one(z, y)

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "estimator": self.estimator,
                "calibrated": self.calibrator is not None, **self.quality.summary(),
                "uncalibrated": self.raw_quality.brief()}  # fmt: skip


class ModelSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The config file's ``[models]``."""

    estimator: str = "logistic"
    estimators: dict[str, str] = {}  # per target, overriding ``estimator``
    conversion_days: float = 7.0
    churn_days: float = 30.0
    checkpoint_seconds: float = 60.0
    window: int = 5_000  # labelled examples the rolling metrics cover
    calibrate: bool = True  # scores through each model's calibrator (profiles.calibration)
    ltv_horizon_days: float = 90.0
    ltv_refit_hours: float = 24.0

    def __post_init__(self) -> None:
        for target in self.estimators:
            if target not in TARGETS:
                raise ValueError(f"`models.estimators` has an unknown target {target!r}")
        for target in TARGETS:
            Model(target, self.estimators.get(target, self.estimator))  # raises on a bad name

    def models(self) -> dict[str, Model]:
        """A fresh model per target, in ``TARGETS`` order."""
        return {t: Model(t, self.estimators.get(t, self.estimator), self.window, self.calibrate)
                for t in TARGETS}  # fmt: skip
