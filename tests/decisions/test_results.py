"""GET /v1/placements/{key}/results, end to end: decisions through /v1/decide, conversions
through the tracking API, rewards by the reward worker, statistics from ClickHouse."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import SECRET_KEY, Engine
from tests.helpers import (
    bearer,
    eventually,
    members,
    run_experiment,
)

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

VARIANT_FIELDS = {"variant", "units", "conversions", "rate", "lift", "liftCI", "pValue",
                  "chanceToBeatControl", "expectedLoss", "sequential"}  # fmt: skip


def results(engine: Engine, key: str, **params: str) -> dict[str, Any]:
    answer = engine.client.get(f"{engine.url}/v1/placements/{key}/results", params=params,
                               headers=bearer())  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_ab_results_from_decisions_and_orders(engine: Engine) -> None:
    run = run_experiment(engine, "cta_test", {"kind": "ab"}, visitors=300)
    found = results(engine, "cta_test")
    assert found["control"] == "plain" and found["metric"] == "reward" and found["method"]
    assert found["srmPValue"] > 0.001 and found["srm"] is False
    by = {v["variant"]: v for v in found["variants"]}
    for name, visitors in run["shown"].items():
        assert VARIANT_FIELDS <= set(by[name])
        assert by[name]["units"] == len(visitors)
    assert by["plain"]["conversions"] + by["bold"]["conversions"] == run["orders"]
    bold = by["bold"]
    assert bold["rate"] > by["plain"]["rate"] and bold["lift"] > 0
    assert bold["liftCI"][0] < bold["lift"] < bold["liftCI"][1]
    assert bold["pValue"] < 0.01 and bold["chanceToBeatControl"] > 0.99
    assert bold["sequential"]["pValue"] >= bold["pValue"]  # the price of peeking freely
    assert "cuped" in bold  # every visitor browsed before their first exposure
    # The same question on the event itself: revenue per visitor.
    revenue = {v["variant"]: v for v in results(engine, "cta_test", metric="Order Completed")
               ["variants"]}  # fmt: skip
    assert revenue["bold"]["mean"] == 40 * revenue["bold"]["conversions"] / revenue["bold"]["units"]
    assert revenue["bold"]["lift"] > 0
    # Only the buyers: a segment of everyone who ordered, filled from history.
    answer = engine.client.put(f"{engine.url}/v1/segments/buyers", headers=bearer(),
                               json={"rule": {"event": "Order Completed", "min": 1, "days": 30}})  # fmt: skip
    assert answer.status_code == 201
    eventually(lambda: len(members(engine, "buyers")) == run["orders"], timeout=60)
    buyers = {v["variant"]: v for v in results(engine, "cta_test", segment="buyers")["variants"]}
    assert sum(v["units"] for v in buyers.values()) == run["orders"]
    assert all(v["conversions"] == v["units"] for v in buyers.values())
    # Bad parameters are named.
    bad = engine.client.get(f"{engine.url}/v1/placements/cta_test/results",
                            params={"since": "yesterday"}, headers=bearer())  # fmt: skip
    assert bad.status_code == 400 and "since" in bad.json()["message"]
    nobody = engine.client.get(f"{engine.url}/v1/placements/cta_test/results",
                               params={"segment": "nope"}, headers=bearer())  # fmt: skip
    assert nobody.status_code == 404


def test_bandit_results_say_which_estimate_is_which(engine: Engine) -> None:
    run_experiment(engine, "cta_bandit", {"kind": "thompson"}, visitors=200)
    found = results(engine, "cta_bandit")
    assert found["srmPValue"] is None  # allocation is meant to move
    assert found["allocation"] and all("decisions" in a for a in found["allocation"])
    assert any("ipw" in note for note in found["method"])
    for variant in found["variants"]:
        if variant["units"]:
            assert variant["ipw"]["low"] <= variant["ipw"]["value"] <= variant["ipw"]["high"]
            assert variant["posterior"]["decisions"] > 0


def test_kairos_report_prints_the_results(engine: Engine) -> None:
    run_experiment(engine, "cta_cli", {"kind": "ab"}, visitors=120)
    printed = subprocess.run(
        [sys.executable, "-m", "edge.cli", "report", "cta_cli", "--url", engine.url,
         "--secret-key", SECRET_KEY], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].startswith("cta_cli · policy ab · metric reward · control plain")
    assert any(line.strip().startswith("plain (control)") for line in lines)
    assert any(line.strip().startswith("bold ") and "%" in line for line in lines)
    assert any(line.startswith("sample ratio: p = ") for line in lines)
    missing = subprocess.run(
        [sys.executable, "-m", "edge.cli", "report", "nope", "--url", engine.url,
         "--secret-key", SECRET_KEY], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1 and "nope" in missing.stderr
