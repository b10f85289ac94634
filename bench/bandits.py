"""Policy simulation: how much each policy loses while it learns, on seeded simulated traffic.

Two scenarios, every policy run on the same seeds:

1. bernoulli    five variants with click rates 4, 5, 6, 8 and 10%: the classic bandit;
2. contextual   three segments of visitors, each with its own best variant (12% against 2–3%):
                only a policy that reads the context can do well.

Regret is what a policy lost against always showing the best variant (in expected clicks),
summed over the rounds; an even A/B split is the baseline that never learns. Prints a table,
writes bench/reports/bandits.md and a chart of the regret curves, bench/reports/bandits.svg.

No HTTP and no engine: in-process simulation only, so no answers to count and no limits to set.

    python bench/bandits.py --rounds 20000 --seeds 5
    python bench/bandits.py --quick
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bandits.abtest import ABTest  # noqa: E402
from bandits.linear import LinearThompson, LinUCB  # noqa: E402
from bandits.mab import UCB1, BetaThompson, EpsilonGreedy  # noqa: E402
from bandits.policy import Policy  # noqa: E402
from bandits.simulate import BernoulliArms, ContextualArms, simulate  # noqa: E402
from bench.harness import add_options, parse, publish  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "bandits.md"
QUICK = {"rounds": 400, "seeds": 1}
COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666"]

Maker = Callable[[int], Policy]
BERNOULLI = BernoulliArms([0.04, 0.05, 0.06, 0.08, 0.10])
CONTEXTUAL = ContextualArms([[0.12, 0.02, 0.03], [0.02, 0.12, 0.03], [0.03, 0.02, 0.12]])
SCENARIOS: dict[str, tuple[BernoulliArms | ContextualArms, dict[str, Maker]]] = {
    "bernoulli": (BERNOULLI, {
        "A/B split (even)": lambda seed: ABTest([1] * 5, salt="sim", seed=seed),
        "ε-greedy (0.1)": lambda seed: EpsilonGreedy(5, epsilon=0.1, seed=seed),
        "UCB1": lambda seed: UCB1(5, seed=seed),
        "Thompson sampling": lambda seed: BetaThompson(5, seed=seed),
        "top-two Thompson": lambda seed: BetaThompson(5, top_two=True, seed=seed),
    }),
    "contextual": (CONTEXTUAL, {
        "A/B split (even)": lambda seed: ABTest([1] * 3, salt="sim", seed=seed),
        "UCB1": lambda seed: UCB1(3, seed=seed),
        "Thompson sampling": lambda seed: BetaThompson(3, seed=seed),
        "LinUCB": lambda seed: LinUCB(3, CONTEXTUAL.dimensions, alpha=0.5, seed=seed),
        "linear Thompson": lambda seed: LinearThompson(3, CONTEXTUAL.dimensions, scale=0.3,
                                                       seed=seed),
    }),
}  # fmt: skip


def run(rounds: int, seeds: int) -> dict[str, dict[str, NDArray[np.float64]]]:
    """Per scenario and policy, the cumulative regret curve averaged over the seeds."""
    curves: dict[str, dict[str, NDArray[np.float64]]] = {}
    for scenario, (env, makers) in SCENARIOS.items():
        progress = Progress(len(makers) * seeds, f"{scenario:<10}")
        curves[scenario] = {}
        for name, make in makers.items():
            runs = []
            for seed in range(seeds):
                runs.append(simulate(make(seed), env, rounds=rounds, seed=seed).regret)
                progress.advance()
            curves[scenario][name] = np.mean(runs, axis=0)
    return curves


def chart(curves: dict[str, dict[str, NDArray[np.float64]]], rounds: int) -> str:
    """The regret curves as an SVG: one panel per scenario, lower is better."""
    width, height, pad = 440, 260, 48
    names = list(dict.fromkeys(name for lines in curves.values() for name in lines))
    colors = {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}  # same in each panel
    panels = []
    for i, (scenario, lines) in enumerate(curves.items()):
        top = max(float(c[-1]) for c in lines.values()) * 1.05
        x0 = i * (width + 20)
        step = max(1, rounds // 200)
        parts = [f'<g transform="translate({x0},0)">',
                 f'<text x="{pad}" y="20" font-weight="bold">{scenario}: cumulative regret '
                 "(lower is better)</text>",
                 f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" '
                 'stroke="#444"/>',
                 f'<line x1="{pad}" y1="30" x2="{pad}" y2="{height - pad}" stroke="#444"/>',
                 f'<text x="{pad}" y="{height - pad + 16}">0</text>',
                 f'<text x="{width - 10}" y="{height - pad + 16}" text-anchor="end">'
                 f"{rounds:,} rounds</text>",
                 f'<text x="{pad - 4}" y="36" text-anchor="end">{top:,.0f}</text>']  # fmt: skip
        for j, (name, curve) in enumerate(lines.items()):
            xs = np.arange(0, rounds, step)
            points = " ".join(
                f"{pad + (width - 10 - pad) * x / rounds:.1f},"
                f"{height - pad - (height - pad - 30) * float(curve[x]) / top:.1f}"
                for x in xs
            )
            color = colors[name]
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                         f'points="{points}"/>')  # fmt: skip
            y = height - 22
            parts.append(f'<rect x="{pad + (j % 3) * 130}" y="{y + (j // 3) * 14 - 8}" '
                         f'width="10" height="10" fill="{color}"/>'
                         f'<text x="{pad + (j % 3) * 130 + 14}" y="{y + (j // 3) * 14 + 1}">'
                         f"{name}</text>")  # fmt: skip
        parts.append("</g>")
        panels.append("".join(parts))
    total = len(curves) * (width + 20)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height + 10}" '
            'font-family="sans-serif" font-size="11">' + "".join(panels) + "</svg>\n")  # fmt: skip


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
    curves = run(args.rounds, args.seeds)
    chart_path = args.report.with_suffix(".svg")  # beside the report, which links it
    chart_path.parent.mkdir(parents=True, exist_ok=True)
    chart_path.write_text(chart(curves, args.rounds))
    lines = [
        f"# Policy simulation, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.rounds:,} rounds, mean of {args.seeds} seeded runs per policy. Regret: expected "
        f"clicks lost against always showing the best variant. Chart: `{chart_path.name}`.",
        "",
        f"![cumulative regret]({chart_path.name})",
        "",
        "Top-two Thompson sampling spends more pulls on the runner-up on purpose (it is made to "
        "identify the best variant quickly, not to earn the most while doing so). In the "
        "contextual scenario every variant pays the same on average, so the policies that do not "
        "read the context do no better than the even split: their curves lie on top of it.",
    ]
    for scenario, by_policy in curves.items():
        best = min(float(c[-1]) for c in by_policy.values())
        lines += ["", f"## {scenario}", "", "| policy | regret | × best | regret, last quarter |",
                  "|---|---:|---:|---:|"]  # fmt: skip
        quarter = args.rounds * 3 // 4
        for name, curve in by_policy.items():
            final = float(curve[-1])
            lines.append(f"| {name} | {final:,.1f} | {final / best:.1f} | "
                         f"{final - float(curve[quarter - 1]):,.1f} |")  # fmt: skip
    publish(args.report, lines)
    print(f"(chart: {chart_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
