"""The load test's entry point, end to end: ``python -m bench.load`` against its own engine.

One short run (about 50 s: the engine's start and demo history, 3 s of baseline, 15 s of load)
must produce the report with a row for every endpoint of the scenarios, each with requests and
no failures, and the engine's memory per process.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

# A real load run against a whole engine (`pytest -m 'not slow'` skips it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = [
    "GET /sdk/v1/kairos.js",
    "GET /v1/o/[decision].gif",
    "GET /v1/r/[decision]/[item]",
    "GET /v1/recommendations/[id]",
    "GET /v1/recommendations/[id]/render",
    "POST /v1/batch",
    "POST /v1/decide",
    "POST /v1/recommendations/batch",
]


def test_a_short_load_run_reports_every_endpoint_without_failures(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--users", "10", "--duration", "15",
         "--baseline-duration", "3", "--spawn-rate", "10", "--think", "0.5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for name in ("load.csv", "load.md", "load.html", "memory.csv"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "load.csv", newline="") as f:
        table = {row["endpoint"]: row for row in csv.DictReader(f)}
    assert sorted(table) == sorted([*ENDPOINTS, "all"])
    for name, row in table.items():
        assert int(row["requests"]) > 0, name
        assert int(row["failures"]) == 0, name
        assert float(row["p50_ms"]) <= float(row["p99_ms"]), name
    # The baseline ran the same users: the busy endpoints have its figures and ratios.
    for name in ("POST /v1/decide", "POST /v1/batch", "all"):
        assert float(table[name]["bare_requests_per_s"]) > 0, name
        assert float(table[name]["p99_x_bare"]) > 0, name

    markdown = (out / "load.md").read_text()
    assert all(f"`{name}`" in markdown for name in ENDPOINTS)
    # Both phases judged, and every decision answered found in ClickHouse.
    assert "**PASS**: no phase had a failed request" in markdown
    assert "every decision answered was logged" in markdown
    # Decisions and emails carried the demo shop's real content.
    counters = json.loads((out / "raw" / "kairos_counters.json").read_text())
    assert counters["with_content"] > counters["decisions"] / 2 > 0
    assert counters["to_log"] > counters["decisions"]  # with the recommendations
    assert counters["emails_with_items"] > counters["emails"] / 2 > 0
    page = (out / "load.html").read_text()
    assert page.count("<svg") == 4 and "POST /v1/decide" in page
    with open(out / "memory.csv", newline="") as f:
        processes = {row["process"] for row in csv.DictReader(f)}
    assert {"api", "workers", "redis"} <= processes  # kairos up: the API, one worker host, Redis
