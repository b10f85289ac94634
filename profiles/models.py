"""The learner's models: a shared feature scaler, one River classifier per target, and how
well each is doing.

Features arrive as numbers (``profiles.history.NUMERIC``) and one-hot flags (device, source,
segments). ``Scaler`` standardises the numbers with River's ``StandardScaler``, fitted on every
moment the learner predicts for (so all three targets see the same scale), and passes the flags
as they are. Each target's classifier is chosen by name in the config file's ``[models]``
section: ``logistic`` (the default: online logistic regression), ``forest`` (adaptive random
forest) or ``tree`` (Hoeffding adaptive tree).

Quality is measured prequentially: each example's label is compared with the prediction made
for it *before* the model learned from it (the prediction stored when the example was made), over
a rolling window: ROC AUC, log loss, and calibration by decile (mean prediction against the
observed rate in each tenth of the probability range).

Examples:
    >>> scale, model = Scaler(["views"]), Model("conversion")
    >>> for i in range(300):
    ...     z = scale({"views": float(i % 10), "device=mobile": 1.0}, learn=True)
    ...     model.learn(z, i % 10 > 6, model.predict(z))
    >>> keen, idle = scale({"views": 9.0}), scale({"views": 0.0})
    >>> model.predict(keen) > model.predict(idle)
    True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from river import forest, linear_model, metrics, optim, preprocessing, tree
from river.base import Classifier

__all__ = ["ESTIMATORS", "Model", "Quality", "Scaler"]

ESTIMATORS: dict[str, Callable[[], Classifier]] = {
    "logistic": lambda: linear_model.LogisticRegression(optimizer=optim.SGD(0.005), l2=1e-4),
    "forest": lambda: forest.ARFClassifier(n_models=10, seed=7),
    "tree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=7),
}
_EPS = 1e-15


class Scaler:
    """Standardise the ``numeric`` features; pass every other (a one-hot flag) as it is."""

    def __init__(self, numeric: Iterable[str]):
        self.numeric = frozenset(numeric)
        self.scaler = preprocessing.StandardScaler()

    def __call__(self, x: dict[str, float], learn: bool = False) -> dict[str, float]:
        numbers = {k: v for k, v in x.items() if k in self.numeric}
        if learn:
            self.scaler.learn_one(numbers)
        scaled: dict[str, float] = self.scaler.transform_one(numbers)
        scaled.update((k, v) for k, v in x.items() if k not in self.numeric)
        return scaled


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

    def summary(self) -> dict[str, Any]:
        loss = self.log_loss()
        have_both = 0 < sum(y for _, y in self.recent) < len(self.recent)
        return {
            "examples": self.examples,
            "positives": self.positives,
            "window": len(self.recent),
            "roc_auc": round(self.auc.get(), 4) if have_both else None,
            "log_loss": round(loss, 4) if loss is not None else None,
            "calibration": self.calibration(),
        }


class Model:
    """One target's classifier (on scaled features) and its quality."""

    def __init__(self, target: str, estimator: str = "logistic", window: int = 5_000):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        self.target = target
        self.estimator = estimator
        self.classifier = ESTIMATORS[estimator]()
        self.quality = Quality(window)

    def predict(self, z: dict[str, float]) -> float:
        return float(self.classifier.predict_proba_one(z).get(True, 0.0))

    def learn(self, z: dict[str, float], y: bool, p: float) -> None:
        """Score ``p`` (predicted before the label was known), then learn ``z`` -> ``y``."""
        self.quality.update(y, p)
        self.classifier.learn_one(z, y)

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "estimator": self.estimator, **self.quality.summary()}
