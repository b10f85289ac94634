"""The learner's calibration: scores that mean their probability, without reordering anyone;
kept with the model (checkpoint and publication), and checkpoints from before it still load."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import redis

from profiles.calibration import Calibrator, expected_calibration_error
from profiles.models import Model
from profiles.trainer import PUBLISHED, load_published


def _overconfident(calibrator: Calibrator, n: int = 5_000, seed: int = 7) -> None:
    """A classifier whose raw score r comes true with probability r / 2."""
    rng = np.random.default_rng(seed)
    for raw in rng.random(n):
        calibrator.learn(float(raw), bool(rng.random() < raw / 2))


def test_it_maps_raw_scores_to_what_came_true() -> None:
    calibrator = Calibrator()
    _overconfident(calibrator)
    for raw in (0.2, 0.5, 0.8):
        assert calibrator(raw) == pytest.approx(raw / 2, abs=0.05)


def test_the_map_is_strictly_increasing() -> None:
    calibrator = Calibrator()
    _overconfident(calibrator)
    mapped = [calibrator(r) for r in np.linspace(0.0, 1.0, 501)]
    assert all(a < b for a, b in zip(mapped, mapped[1:]))
    assert 0.0 <= mapped[0] and mapped[-1] <= 1.0


def test_before_warm_up_scores_pass_as_they_are() -> None:
    calibrator = Calibrator(warm_up=100)
    _overconfident(calibrator, n=99)
    assert not calibrator.active and calibrator(0.8) == 0.8
    calibrator.learn(0.5, False)
    assert calibrator.active and calibrator(0.8) < 0.7


def test_it_follows_a_change_within_its_memory() -> None:
    calibrator = Calibrator(memory=1_000)
    _overconfident(calibrator)
    rng = np.random.default_rng(1)
    for raw in rng.random(5_000):  # now the scores are right
        calibrator.learn(float(raw), bool(rng.random() < raw))
    assert calibrator(0.6) == pytest.approx(0.6, abs=0.06)


def test_it_pickles_with_its_map() -> None:
    calibrator = Calibrator()
    _overconfident(calibrator)
    again = pickle.loads(pickle.dumps(calibrator))
    assert [again(r) for r in (0.1, 0.5, 0.9)] == [calibrator(r) for r in (0.1, 0.5, 0.9)]


@pytest.mark.parametrize(
    ("bins", "memory", "warm_up", "refit_every"),
    [(1, 10, 0, 1), (10, 0, 0, 1), (10, 10, -1, 1), (10, 10, 0, 0)],
)
def test_bad_settings_are_refused(bins: int, memory: int, warm_up: int, refit_every: int) -> None:
    with pytest.raises(ValueError, match="bins must be at least 2, memory at least 1"):
        Calibrator(bins, memory, warm_up, refit_every)


def test_a_long_stream_keeps_its_numbers_finite() -> None:
    calibrator = Calibrator(memory=10)
    _overconfident(calibrator, n=20_000)  # the weights grow by 1/0.9 each: renormalised
    assert 0.0 < calibrator(0.5) < 0.5


def test_expected_calibration_error() -> None:
    assert expected_calibration_error([]) == 0.0
    assert expected_calibration_error([(0.25, True), (0.25, False)]) == pytest.approx(0.25)
    # bins weigh by their examples: one bin right, the other off by 0.5
    pairs = [(0.05, False)] * 10 + [(0.55, True)] * 5 + [(0.55, False)] * 5
    assert expected_calibration_error(pairs) == pytest.approx((10 * 0.05 + 10 * 0.05) / 20)


def test_a_model_reports_ece_for_its_scores_and_its_raw_scores() -> None:
    model = Model("conversion")
    rng = np.random.default_rng(3)
    for _ in range(3_000):
        z = {"x": float(rng.normal())}
        p, raw = model.scores(z)
        model.learn(z, bool(rng.random() < 0.2), p, raw)
    summary = model.summary()
    assert summary["calibrated"] is True
    assert summary["ece"] is not None and set(summary["uncalibrated"]) == {
        "roc_auc", "log_loss", "ece"}  # fmt: skip
    assert summary["examples"] == 3_000 and 0.0 < summary["ece"] < 0.1
    assert Model("churn", calibrate=False).calibrator is None


def test_a_checkpoint_from_before_calibration_loads() -> None:
    model = Model("churn")
    old = model.__dict__.copy()
    del old["calibrator"], old["raw_quality"]
    restored = Model.__new__(Model)
    restored.__setstate__(old)
    assert isinstance(restored.calibrator, Calibrator) and restored.raw_quality.window == 5_000
    assert restored.predict({"x": 1.0}) == pytest.approx(0.5)


def test_published_models_carry_their_calibrators(r: redis.Redis) -> None:
    model = Model("conversion")
    assert model.calibrator is not None
    _overconfident(model.calibrator)
    r.set(PUBLISHED, pickle.dumps({"conversion": (model.classifier, model.calibrator)}))
    loaded = load_published(r)
    assert loaded is not None and loaded["conversion"].predict({}) == pytest.approx(0.25, abs=0.05)
    r.set(PUBLISHED, pickle.dumps({"conversion": model.classifier}))  # a trainer from before
    loaded = load_published(r)
    assert loaded is not None and loaded["conversion"].calibrator is None
    assert loaded["conversion"].predict({}) == 0.5
