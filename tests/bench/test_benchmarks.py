"""Every benchmark in bench/, end to end in its smallest run (``--quick``): it exits 0 and its
report names every phase. And the verdict can fail: with a rate limit that binds, the decide
benchmark exits 1 with its ``FAILED:`` line and prints no ratio for the phase.

(``python -m bench.load`` has its own end-to-end test, tests/bench/test_load.py.) The ones that
load an HTTP server need Debian's wrk, installed on first use where we may (tests/debian.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.debian import program

ROOT = Path(__file__).resolve().parents[2]

# script -> the phases its report must name
BENCHMARKS = {
    "decide": ["| bare |", "| naive |", "| kairos |", "| bare-1core |", "| kairos-1core |",
               "- kairos:", "- kairos-1core:", "In process"],
    "ingest": ["| discard |", "| ingest |", "| steady |", "Drain"],
    "profiles": ["| baseline |", "| updater |", "api:"],
    "recs": ["| bare |", "| kairos |", "batch:", "batch-rendered:"],
    "api_workers": ["| decide-1 |", "| decide-2 |", "| track-1 |", "| track-2 |"],
    "journeys": ["| naive |", "| worker |", "lateness:"],
    "learner": ["| naive |", "| learner |", "| 1 instance |", "| 2 instances |", "in process:",
                "each exactly once"],
    "bandits": ["## stationary", "## contextual", "## drifting", "## revenue", "## Targets"],
    "access": ["| write key |", "| named key |", "In process, the key check"],
    "recs_quality": ["## k = 4", "## Reading"],
    "replicas": ["| replicas-0 |", "| replicas-1 |"],
    "decision_memory": ["| per decision |", "| per million decisions |"],
    "capacity": ["## (a) Fully processed", "bytes per profile", "| single |",
                 "| 3-master cluster |"],
    "history": ["| history, from events |", "| history |", "| results |", "| list viewed |",
                "| dry run |", "bytes per event", "- Target history p99", "The sink's inserts"],
    "messaging": ["| smtp |", "| mailer |", "| broadcast |", "**PASS**"],
    "memory": ["## `--worker-processes each`: 8 processes", "## `--worker-processes one`: 3 "
               "processes", "| **total** |", "One worker process instead of one per kind"],
}  # fmt: skip
WRK = {"decide", "ingest", "profiles", "recs", "api_workers", "replicas", "access"}


def _run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_the_quick_run_passes_and_reports_every_phase(name: str, tmp_path: Path) -> None:
    if name in WRK:
        program("wrk", "the benchmarks that load an HTTP server")
    report = tmp_path / f"{name}.md"
    done = _run(f"bench/{name}.py", "--quick", "--report", str(report))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    missing = [phase for phase in BENCHMARKS[name] if phase not in text]
    assert not missing, text
    if name in WRK:
        assert "**PASS**: no phase had a non-2xx answer" in text
        assert "FAILED" not in done.stdout


@pytest.mark.slow
def test_the_soak_quick_run_passes(tmp_path: Path) -> None:
    done = _run("-m", "bench.soak", "--quick", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (tmp_path / "soak.md").read_text()
    assert "**PASS**" in text and "decisions logged in ClickHouse" in text
    assert "| `POST /v1/decide` |" in text


@pytest.mark.slow
def test_a_binding_rate_limit_fails_the_decide_benchmark(tmp_path: Path) -> None:
    report = tmp_path / "decide.md"
    done = _run("bench/decide.py", "--quick", "--phases", "bare,kairos", "--rounds-in-process",
                "0", "--per-key", "20", "--report", str(report))  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED: phase kairos had "), last
    assert " non-2xx answers of " in last and "bare" not in last
    row = next(line for line in report.read_text().splitlines() if line.startswith("| kairos |"))
    assert "| – |" in row  # no ratio over 429s
    assert "**FAILED**: phase kairos had" in report.read_text()
