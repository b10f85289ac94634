from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bandits.abtest import ABTest
from bandits.hashing import bucket, pick

CASES = json.loads((Path(__file__).parent / "cases.json").read_text())["bucket"]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c['unit']}|{c['salt']}|v{c['version']}" for c in CASES]
)
def test_bucket_cases(case: dict[str, object]) -> None:
    assert bucket(case["unit"], case["salt"], case["version"]) == case["bucket"]  # type: ignore[arg-type]


def test_assignment_is_the_same_in_another_process() -> None:
    units = [f"visitor-{i}" for i in range(200)]
    here = [ABTest([1, 1, 1], salt="home_hero").assign(u).arm for u in units]
    code = (
        "import json, sys; from bandits.abtest import ABTest; "
        "t = ABTest([1, 1, 1], salt='home_hero'); "
        "print(json.dumps([t.assign(u).arm for u in json.loads(sys.argv[1])]))"
    )
    there = subprocess.run([sys.executable, "-c", code, json.dumps(units)], capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": "123"}).stdout  # fmt: skip
    assert json.loads(there) == here


@pytest.mark.parametrize("weights", [[50, 50], [20, 30, 50], [1, 1, 1, 1], [90, 10]])
def test_100k_units_split_within_one_percent_of_the_weights(weights: list[int]) -> None:
    test = ABTest(weights, salt="split-check")
    counts = Counter(test.assign(f"u{i}").arm for i in range(100_000))
    for arm, weight in enumerate(weights):
        assert abs(counts[arm] / 100_000 - weight / sum(weights)) <= 0.01


def test_holdout_gets_the_default_and_the_rest_splits() -> None:
    test = ABTest([1, 1], salt="h", holdout=0.1, default=0)
    held = sum(bucket(f"u{i}", "h") < 0.1 for i in range(20_000))
    assert 0.09 < held / 20_000 < 0.11
    assert all(
        test.assign(f"u{i}") == (0, 1.0) for i in range(20_000) if bucket(f"u{i}", "h") < 0.1
    )


def test_changing_weights_moves_only_the_units_that_must_move() -> None:
    before = ABTest([50, 50], salt="w")
    after = ABTest([40, 60], salt="w")
    moved = sum(before.assign(f"u{i}").arm != after.assign(f"u{i}").arm for i in range(20_000))
    assert 0.08 < moved / 20_000 < 0.12  # 10 % of units move, not ~50 %


def test_pick() -> None:
    assert [pick(x, [1, 1, 2]) for x in (0.0, 0.24, 0.25, 0.49, 0.5, 0.99)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="weights must add up to more than zero"):
        pick(0.5, [0, 0])
