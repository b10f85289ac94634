"""Off-policy evaluation on a public log, checked against a published figure.

The Open Bandit Dataset's small sample (ZOZOTOWN, ``random`` policy, ``all`` campaign: 10,000
rounds, 80 items, three positions) and the ZOZOTOWN production prior ship inside the source
distribution of ``obp`` 0.5.7, which is downloaded once (``pip download``) and cached in
``~/.cache/kairos/obp``. obp's README reports that Bernoulli Thompson sampling with that prior,
its action distribution from 100,000 simulations (seed 12345), evaluated by IPW on that log, has
a relative policy value of 1.198126. The engine's Thompson sampler and IPS estimator, on their
own random stream, come within ±0.01 of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from decisions.logfile import read_log
from decisions.offline import Prior, evaluate_log
from edge.cli.main import main
from tests.conftest import SECRET_KEY, Engine

PUBLISHED = 1.198126  # obp 0.5.7 README, "Example with Open Bandit Dataset"
_SDIST = "obp-0.5.7.tar.gz"
_ROOT = "obp-0.5.7/obp/"


@pytest.fixture(scope="module")
def obd() -> dict[str, Any]:
    """The ``random`` / ``all`` log (CSV text) and the ``all`` campaign's production prior."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kairos" / "obp"
    archive = cache / _SDIST
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--ignore-requires-python", "obp==0.5.7", "-d", str(cache)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0 and archive.exists(), done.stderr[-2000:]
    with tarfile.open(archive) as tar:

        def read(name: str) -> str:
            found = tar.extractfile(_ROOT + name)
            assert found is not None, name
            return found.read().decode()

        log = read("dataset/obd/random/all/all.csv")
        prior = yaml.safe_load(read("policy/conf/prior_bts.yaml"))["all"]
    return {"log": log, "prior": Prior(alpha=prior["alpha"], beta=prior["beta"])}


def test_thompson_sampling_on_the_open_bandit_dataset_matches_obp(obd: dict[str, Any]) -> None:
    rounds = read_log(obd["log"])
    assert (rounds.size, int(rounds.arms.max()) + 1, int(rounds.positions.max()) + 1) == (
        10_000, 80, 3)  # fmt: skip
    found = evaluate_log(rounds, prior=obd["prior"], draws=100_000, seed=12345)
    ips, snips, dr = (found["estimates"][k] for k in ("ips", "snips", "dr"))
    print(f"\nOBD random/all, Bernoulli TS with the ZOZOTOWN prior: relative value IPS "
          f"{ips['relative']:.4f} (obp: {PUBLISHED}), SNIPS {snips['relative']:.4f}, "
          f"DR {dr['relative']:.4f}")  # fmt: skip
    assert found["mean_reward"] == pytest.approx(0.0038)
    assert abs(ips["relative"] - PUBLISHED) <= 0.01
    for estimate in (ips, snips, dr):
        assert estimate["low"] < estimate["value"] < estimate["high"]
        assert estimate["decisions"] == 10_000 and 0 < estimate["effective_decisions"] < 10_000
    assert 1.0 < snips["relative"] < 1.5 and 0.8 < dr["relative"] < 1.5


def test_kairos_evaluate_prints_the_estimates(
    obd: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command of docs/results.md, verbatim, in a directory holding its two files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "all.csv").write_text(obd["log"])
    prior = {"alpha": obd["prior"].alpha, "beta": obd["prior"].beta}
    (tmp_path / "prior.json").write_text(json.dumps(prior))
    command = ".venv/bin/kairos evaluate --log all.csv --prior prior.json --seed 12345"
    assert command in (Path(__file__).parents[2] / "docs" / "results.md").read_text()
    argv = command.split()[1:]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "all.csv: 10,000 rounds judged (0 learned from), 80 arms × 3 positions" in out
    header, _, *rows = out.splitlines()[2:8]
    assert [c.strip() for c in header.split("|")] == [
        "estimator", "value", "95% interval", "relative", "effective rounds"]  # fmt: skip
    assert [r.split("|")[0].strip() for r in rows] == ["logged", "ips", "snips", "dr"]
    assert abs(float(rows[1].split("|")[3]) - PUBLISHED) <= 0.01
    assert main([*argv, "--draws", "20000", "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["draws"] == 20_000 and set(found["estimates"]) == {"logged", "ips", "snips", "dr"}


def test_a_candidate_that_learns_from_the_first_half(obd: dict[str, Any]) -> None:
    rounds = read_log(obd["log"])
    found = evaluate_log(rounds, draws=5_000, train_share=0.5)
    assert found["rounds"] == {"train": 5_000, "evaluate": 5_000} and not found["prior"]
    assert found["estimates"]["logged"]["relative"] == 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--draws", "0"], "--draws must be at least 1, got 0", id="draws"),
        pytest.param(
            ["--train-share", "1"], "--train-share must lie in [0, 1), got 1.0", id="train-share"
        ),  # fmt: skip
        pytest.param(
            ["--prior", "{p}"], "prior.json: $.alpha[1]: Expected `float` >= 1.0", id="prior"
        ),  # fmt: skip
    ],
)
def test_kairos_evaluate_refuses_bad_options(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, prior = tmp_path / "log.csv", tmp_path / "prior.json"
    log.write_text("action,reward,propensity\n0,1,0.5\n1,0,0.5\n")
    prior.write_text('{"alpha": [1, 0.5], "beta": [1, 1]}')
    code = main(["evaluate", "--log", str(log), *[a.replace("{p}", str(prior)) for a in argv]])
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_kairos_evaluate_names_the_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.csv"
    log.write_text("item_id,position,click,propensity_score\n3,1,0,0.0125\n4,2,1,0\n")
    assert main(["evaluate", "--log", str(log)]) == 1
    assert capsys.readouterr().err == (
        f"kairos evaluate: {log}: line 3, column propensity_score: must lie in (0, 1], got '0'\n"
    )


def _small_log() -> str:
    """Uniform logging over 3 arms at 2 positions; arm 2 pays best (seeded)."""
    import numpy as np

    rng = np.random.default_rng(9)
    lines = ["action,position,reward,propensity,device"]
    for _ in range(600):
        arm, position = int(rng.integers(0, 3)), int(rng.integers(1, 3))
        reward = int(rng.random() < (0.1, 0.2, 0.5)[arm])
        lines.append(f"{arm},{position},{reward},{1 / 3:.6f},{'mobile' if arm % 2 else 'desk'}")
    return "\n".join(lines) + "\n"


def test_post_evaluate_answers_the_estimates(engine: Engine) -> None:
    body = {"log": _small_log(), "draws": 2_000, "seed": 3, "train_share": 0.5}
    answer = engine.post("/v1/evaluate", body, key=SECRET_KEY)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert (found["arms"], found["positions"], found["rounds"]) == (
        3, 2, {"train": 300, "evaluate": 300})  # fmt: skip
    assert set(found["estimates"]) == {"logged", "ips", "snips", "dr"}
    # having learned that arm 2 pays best, the candidate beats uniform logging
    assert found["estimates"]["snips"]["relative"] > 1.2
    assert engine.post("/v1/evaluate", body, key=None).status_code == 401


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        pytest.param({"log": "action,reward\n0,1\n"}, "invalid_log", "$.log: line 1: no "
                     "propensity column (propensity or propensity_score); the columns are "
                     "action, reward", id="no-propensity"),
        pytest.param({"log": "action,reward,propensity\n0,1,2\n"}, "invalid_log", "$.log: line "
                     "2, column propensity: must lie in (0, 1], got '2'", id="propensity"),
        pytest.param({"log": "action,reward,propensity\n0,1,1\n", "policy": "ucb"},
                     "invalid_request", "$.policy: Invalid enum value 'ucb' — expected one of "
                     "thompson", id="policy"),
        pytest.param({"log": "action,reward,propensity\n3,1,1\n",
                      "prior": {"alpha": [1, 1], "beta": [1, 1]}}, "invalid_request",
                     "$.prior: the log shows arm 3, the prior has arms 0 to 1", id="prior-arms"),
        pytest.param({"log": "action,reward,propensity\n0,1,1\n",
                      "prior": {"alpha": [1, 2], "beta": [1]}}, "invalid_request",
                     "$.prior: alpha has 2 arms, beta 1", id="prior-lengths"),
        pytest.param({"log": "x", "draws": 0}, "invalid_request", "$.draws: Expected `int` "
                     ">= 1", id="draws"),
    ],
)  # fmt: skip
def test_post_evaluate_refuses_bad_input(
    engine: Engine, body: dict[str, Any], code: str, message: str
) -> None:
    answer = engine.post("/v1/evaluate", body, key=SECRET_KEY)
    assert answer.status_code == 400
    assert answer.json() == {"code": code, "message": message}
