"""Policy simulation: how much each policy earns and loses while it learns, on seeded traffic
through the path a policy takes in the engine (``bench/learning_path.py``: built from a
placement, served from its saved state, taught by pulls and later rewards as the reward
worker teaches it).

Four scenarios, every policy of a scenario run on the same seeds:

1. stationary  five variants with click rates 4, 5, 6, 8 and 10%: the classic bandit;
2. contextual  three segments of visitors, each with its own best variant (12% against 2–3%):
               only a policy that reads the context can do well;
3. drifting    four variants at 4, 5, 6 and 10% until halfway, when the promotion on the
               fourth ends (it falls to 3%) and the second becomes the best (8%);
4. revenue     four variants converting 5, 4, 3 and 2% with orders worth 20, 25, 40 and 100 on
               average (log-normal): the best-converting variant earns half what the rarest
               one does per decision. Twice as many decisions (revenue is noisier), and at
               least 10 seeds.

The oracle always shows the variant with the best expected reward; a policy's ratio is its
expected reward over the oracle's. Targets (the run fails, exit 1, when one is missed; not
checked with ``--quick``, whose runs are too short to learn anything):

- drifting: Thompson sampling with change detection earns ≥ 0.90 of the oracle over the half
  after the change, in every seed;
- stationary: it earns ≥ 0.97 of what plain Thompson sampling earns (mean over the seeds);
- revenue: revenue Thompson earns ≥ 0.95 of the oracle's revenue per decision in every one of
  the (at least 10) seeds.

Prints a table, writes bench/reports/bandits.md and a cumulative-regret chart per scenario
beside it (``bandits-<scenario>.svg``); a full run also writes those charts into docs/img/ and
their curves into edge/pages/policies.json (the dashboard's "Choosing a policy" page).
No HTTP and no engine: in process only, so no answers to count and no limits to set.

    python bench/bandits.py --rounds 20000 --seeds 5
    python bench/bandits.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bandits.simulate import (  # noqa: E402
    BernoulliArms,
    ContextualArms,
    Environment,
    RevenueArms,
    ShiftingArms,
)
from bandits.spec import PolicySpec  # noqa: E402
from bench.harness import add_options, parse, publish  # noqa: E402
from bench.learning_path import Trace, placement_for, run  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402
from edge.pages.charts import regret_svg  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "bandits.md"
DOCS_IMG = ROOT / "docs" / "img"
DASHBOARD = ROOT / "edge" / "pages" / "policies.json"
QUICK = {"rounds": 400, "seeds": 1}
POINTS = 200  # per curve in the charts

SEGMENTS = ["bias", "segment:a", "segment:b", "segment:c"]
AB = PolicySpec(kind="ab")
THOMPSON = PolicySpec()
DETECTING = PolicySpec(detect_changes=True)
WINDOW = PolicySpec(window=2000)


@dataclass(frozen=True)
class Scenario:
    title: str
    env: Environment
    arms: int
    policies: dict[str, PolicySpec]
    revenue: bool = False
    length: float = 1.0  # rounds, as a multiple of --rounds
    least_seeds: int = 1


SCENARIOS = {
    "stationary": Scenario("five variants at 4–10%", BernoulliArms([0.04, 0.05, 0.06, 0.08, 0.10]),
                           5, {"A/B split (even)": AB,
                               "ε-greedy (0.1)": PolicySpec(kind="epsilon_greedy", epsilon=0.1),
                               "UCB1": PolicySpec(kind="ucb1"),
                               "Thompson sampling": THOMPSON,
                               "top-two Thompson": PolicySpec(kind="top_two_thompson"),
                               "Thompson, change detection": DETECTING,
                               "Thompson, window 2,000": WINDOW}),
    "contextual": Scenario("each segment its own best variant",
                           ContextualArms([[0.12, 0.02, 0.03], [0.02, 0.12, 0.03],
                                           [0.03, 0.02, 0.12]]),
                           3, {"A/B split (even)": AB, "UCB1": PolicySpec(kind="ucb1"),
                               "Thompson sampling": THOMPSON,
                               "LinUCB": PolicySpec(kind="linucb", alpha=0.5, features=SEGMENTS),
                               "linear Thompson": PolicySpec(kind="linear_thompson", scale=0.3,
                                                             features=SEGMENTS)}),
    "drifting": Scenario("the best variant changes halfway",
                         ShiftingArms([0.04, 0.05, 0.06, 0.10], [0.04, 0.08, 0.06, 0.03], at=0),
                         4, {"A/B split (even)": AB, "Thompson sampling": THOMPSON,
                             "Thompson, discount 0.995": PolicySpec(discount=0.995),
                             "Thompson, window 2,000": WINDOW,
                             "Thompson, change detection": DETECTING}),
    "revenue": Scenario("a rare variant earns the most", RevenueArms([0.05, 0.04, 0.03, 0.02],
                                                                     [20.0, 25.0, 40.0, 100.0]),
                        4, {"A/B split (even)": AB,
                            "Gaussian Thompson": PolicySpec(kind="gaussian_thompson"),
                            "revenue Thompson": PolicySpec(kind="revenue_thompson")},
                        revenue=True, length=2.0, least_seeds=10),
}  # fmt: skip

Results = dict[str, dict[str, list[Trace]]]  # scenario -> policy -> one trace per seed


def rounds_of(scenario: Scenario, rounds: int) -> int:
    return int(rounds * scenario.length)


def environment(scenario: Scenario, rounds: int) -> Environment:
    """The scenario's environment for a run of ``rounds`` (a shift happens halfway)."""
    env = scenario.env
    if isinstance(env, ShiftingArms):
        return ShiftingArms(env.before, env.after, at=rounds // 2)
    return env


def simulate_all(rounds: int, seeds: int) -> Results:
    results: Results = {}
    for name, scenario in SCENARIOS.items():
        n = rounds_of(scenario, rounds)
        env = environment(scenario, n)
        runs = max(seeds, scenario.least_seeds)
        progress = Progress(len(scenario.policies) * runs, f"{name:<10}")
        results[name] = {}
        for policy, spec in scenario.policies.items():
            placement = placement_for(spec, scenario.arms, revenue=scenario.revenue)
            traces = []
            for seed in range(runs):
                traces.append(run(placement, env, n, seed))
                progress.advance()
            results[name][policy] = traces
    return results


@dataclass(frozen=True)
class Target:
    what: str
    measured: float
    least: float

    @property
    def met(self) -> bool:
        return self.measured >= self.least


def targets(results: Results, rounds: int) -> list[Target]:
    drifting = results["drifting"]["Thompson, change detection"]
    half = rounds_of(SCENARIOS["drifting"], rounds) // 2
    stationary = results["stationary"]
    detecting = np.mean([t.gained.sum() for t in stationary["Thompson, change detection"]])
    plain = np.mean([t.gained.sum() for t in stationary["Thompson sampling"]])
    revenue = results["revenue"]["revenue Thompson"]
    return [
        Target("drifting: change detection / oracle after the change, lowest seed",
               min(t.ratio(half) for t in drifting), 0.90),
        Target("stationary: change detection / plain Thompson", float(detecting / plain), 0.97),
        Target(f"revenue: revenue Thompson / oracle, lowest of {len(revenue)} seeds",
               min(t.ratio() for t in revenue), 0.95),
    ]  # fmt: skip


def curves(traces: dict[str, list[Trace]]) -> dict[str, list[tuple[float, float]]]:
    """Each policy's cumulative regret, mean over the seeds, at ``POINTS`` rounds."""
    found = {}
    for policy, runs in traces.items():
        regret = np.mean([t.regret for t in runs], axis=0)
        at = np.unique(np.linspace(0, len(regret) - 1, POINTS).astype(int))
        found[policy] = [(float(x + 1), round(float(regret[x]), 2)) for x in at]
    return found


def table(name: str, traces: dict[str, list[Trace]], rounds: int) -> list[str]:
    n = rounds_of(SCENARIOS[name], rounds)
    half, quarter = n // 2, n * 3 // 4
    head = "| policy | regret | × oracle | × oracle, lowest seed | × oracle, last quarter |"
    if name == "drifting":
        head += " × oracle after the change | changes found (mean) |"
    lines = ["", f"## {name}", "", f"{SCENARIOS[name].title}; {n:,} decisions, "
             f"{len(next(iter(traces.values())))} seed(s).", "", head,
             "|---" + "|---:" * (head.count("|") - 2) + "|"]  # fmt: skip
    for policy, runs in traces.items():
        cells = [f"{np.mean([t.regret[-1] for t in runs]):,.1f}",
                 f"{np.mean([t.ratio() for t in runs]):.3f}",
                 f"{min(t.ratio() for t in runs):.3f}",
                 f"{np.mean([t.ratio(quarter) for t in runs]):.3f}"]  # fmt: skip
        if name == "drifting":
            cells += [f"{np.mean([t.ratio(half) for t in runs]):.3f}",
                      f"{np.mean([len(t.changes) for t in runs]):.1f}"]  # fmt: skip
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return lines


def write_charts(results: Results, rounds: int, folder: Path, stem: str) -> list[Path]:
    written = []
    for name, traces in results.items():
        path = folder / f"{stem}-{name}.svg"
        path.parent.mkdir(parents=True, exist_ok=True)
        n = rounds_of(SCENARIOS[name], rounds)
        title = f"{name}: {SCENARIOS[name].title} — cumulative regret (lower is better)"
        path.write_text(regret_svg(curves(traces), title, f"{n:,} decisions"))
        written.append(path)
    return written


def dashboard_data(results: Results, rounds: int, seeds: int) -> dict[str, object]:
    """What the dashboard's "Choosing a policy" page draws: the same curves as the charts."""
    return {
        "measured": f"{datetime.now(UTC):%Y-%m-%d}",
        "seeds": seeds,
        "scenarios": {
            name: {"title": SCENARIOS[name].title, "decisions": rounds_of(SCENARIOS[name], rounds),
                   "ratios": {p: round(float(np.mean([t.ratio() for t in runs])), 3)
                              for p, runs in traces.items()},
                   "curves": curves(traces)}
            for name, traces in results.items()
        },
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20_000, help="default %(default)s")
    parser.add_argument(
        "--seeds", type=int, default=5, help="runs per policy (default %(default)s)"
    )
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    results = simulate_all(args.rounds, args.seeds)
    charts = write_charts(results, args.rounds, args.report.parent, args.report.stem)
    if not args.quick:
        write_charts(results, args.rounds, DOCS_IMG, "regret")
        DASHBOARD.write_text(json.dumps(dashboard_data(results, args.rounds, args.seeds)) + "\n")
    lines = [
        f"# Policy simulation, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.rounds:,} decisions per run ({rounds_of(SCENARIOS['revenue'], args.rounds):,} "
        f"for revenue), {args.seeds} seeded runs per policy (at least 10 for revenue), through "
        "the engine's learning path: the served state reloaded every 100 decisions, each reward "
        "arriving 30 decisions after its decision on average. Regret: expected reward lost "
        "against the oracle, which always shows the best variant; × oracle: expected reward "
        "over the oracle's.",
        "",
        *[f"![{path.stem}]({path.name})" for path in charts],
        "",
        "Top-two Thompson sampling spends more decisions on the runner-up on purpose (it is made "
        "to identify the best variant quickly, not to earn the most while doing so). In the "
        "contextual scenario every variant pays the same on average, so the policies that do "
        "not read the context do no better than the even split.",
    ]
    for name, traces in results.items():
        lines += table(name, traces, args.rounds)
    found = targets(results, args.rounds)
    lines += ["", "## Targets", ""]
    for target in found:
        verdict = "not checked (--quick)" if args.quick else ("met" if target.met else "MISSED")
        lines.append(f"- {target.what}: **{target.measured:.3f}** (target ≥ {target.least}): "
                     f"{verdict}")  # fmt: skip
    publish(args.report, lines)
    missed = [t for t in found if not t.met]
    if missed and not args.quick:
        for target in missed:
            print(f"FAILED: {target.what} was {target.measured:.3f}, below {target.least}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
