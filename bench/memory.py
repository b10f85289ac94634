"""The engine's memory: every process of ``kairos up --demo`` once it has settled, in both worker
layouts, in the same run.

For each layout of ``--layouts`` (``kairos up --worker-processes``):

- ``each``: a process per worker kind (eight processes in all with the API and Redis);
- ``one``: every worker in one host process, a thread each (three in all; the default);

the engine starts on a fresh data dir with the demo shop, sends its demo history and drains its
spool (``bench.engine.start``: the recommendation placements answer with items), is left alone
for ``--settle`` seconds, then the resident memory of each of its processes is read
``--samples`` times, a second apart: RSS (``VmRSS``: what ``ps`` shows; pages shared between
processes, such as libpython's and numpy's code, count in each) and PSS (``Pss`` of
``smaps_rollup``: each shared page divided among the processes that map it, so the sum over the
processes is what the engine takes from the machine). Each figure is the median of its samples.

With both layouts measured the report gives ``one``'s totals as a fraction of ``each``'s (issue
17 asks for at most half). The run fails (exit 1, one ``FAILED:`` line) on any error: an engine
that does not start or answer, a process that exits or is restarted while measured, a layout
that runs another number of processes than it should, a ``/healthz`` that is not 200 at the
end; and, when ``--target`` is given, a total RSS of ``one`` above that fraction of ``each``'s.

    python bench/memory.py
    python bench/memory.py --layouts one --settle 60
    python bench/memory.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/memory.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import engine as engines
from bench.harness import ROOT, add_options, free_port, machine, parse, publish
from edge.runtime.workers import WORKERS

REPORT = ROOT / "bench" / "reports" / "memory.md"
QUICK = {"settle": 5.0, "samples": 3}
LAYOUTS = {"each": 2 + len(WORKERS), "one": 3}  # layout -> its processes: API, Redis, workers


@dataclass
class Measured:
    layout: str
    rss: dict[str, float] = field(default_factory=dict)  # process -> MB (median)
    pss: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def total_rss(self) -> float:
        return sum(self.rss.values())

    @property
    def total_pss(self) -> float:
        return sum(self.pss.values())


def pss_mb(pid: int) -> float | None:
    """Proportional set size of ``pid`` in MB (None once it is gone)."""
    try:
        for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(layout: str, settle: float, samples: int, work: Path) -> Measured:
    """``kairos up --demo --worker-processes LAYOUT``, settled, its processes' memory."""
    found = Measured(layout)
    print(f"{layout}: starting kairos up --demo --worker-processes {layout}", flush=True)
    engine = engines.start(work, free_port(), extra=["--worker-processes", layout])
    try:
        time.sleep(settle)
        assert engine.proc is not None
        first = engines.processes(engine.data_dir, engine.proc.pid)
        if len(first) != LAYOUTS[layout]:
            found.problems.append(f"{layout} ran {len(first)} processes, not {LAYOUTS[layout]}: "
                                  f"{', '.join(sorted(first))}")  # fmt: skip
        rss: dict[str, list[float]] = {name: [] for name in first}
        pss: dict[str, list[float]] = {name: [] for name in first}
        for n in range(samples):
            if n:
                time.sleep(1.0)
            now = engines.processes(engine.data_dir, engine.proc.pid)
            for name, pid in first.items():
                r, p = engines.rss_mb(pid), pss_mb(pid)
                if now.get(name) != pid or r is None or p is None:
                    found.problems.append(f"{layout}: process {name} ({pid}) exited or was "
                                          "restarted while measured")  # fmt: skip
                    return found
                rss[name].append(r)
                pss[name].append(p)
        found.rss = {name: statistics.median(values) for name, values in rss.items()}
        found.pss = {name: statistics.median(values) for name, values in pss.items()}
        health = httpx.get(f"{engine.url}/healthz", timeout=10)
        if health.status_code != 200:
            found.problems.append(f"{layout}: /healthz answered {health.status_code}")
    finally:
        engines.stop(engine)
    for name in sorted(found.rss, key=lambda n: -found.rss[n]):
        print(f"  {name:<10} RSS {found.rss[name]:7.1f} MB   PSS {found.pss[name]:7.1f} MB")
    print(f"  total      RSS {found.total_rss:7.1f} MB   PSS {found.total_pss:7.1f} MB", flush=True)
    return found


def _label(name: str) -> str:
    if name == "workers":
        return f"workers ({', '.join(WORKERS)}: one process)"
    if name == "sink":
        return "sink (owns embedded ClickHouse)"
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layouts", default="each,one",
                        help="the --worker-processes layouts to measure, in this order "
                        "(default %(default)s)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=30.0, metavar="SECONDS",
                        help="idle time after the demo history is in, before measuring "
                        "(default %(default)s)")  # fmt: skip
    parser.add_argument("--samples", type=int, default=10,
                        help="readings a second apart; each figure is their median "
                        "(default %(default)s)")  # fmt: skip
    parser.add_argument("--target", type=float, default=None, metavar="FRACTION",
                        help="fail if the one-process layout's total RSS is above this "
                        "fraction of the other's (default: report it only)")  # fmt: skip
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    if not layouts or set(layouts) - set(LAYOUTS):
        parser.error(f"--layouts: choose from {', '.join(LAYOUTS)} (comma-separated)")
    results: list[Measured] = []
    for layout in layouts:
        work = Path(tempfile.mkdtemp(prefix=f"kairos-bench-memory-{layout}-"))
        try:
            results.append(measure(layout, args.settle, args.samples, work))
        except RuntimeError as exc:  # it did not start, or stopped answering
            results.append(Measured(layout, problems=[f"{layout}: {exc}"]))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    problems = [problem for result in results for problem in result.problems]
    by_layout = {result.layout: result for result in results}
    lines = [
        f"# Engine memory, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`kairos up --demo` on a fresh data dir (embedded Redis and ClickHouse, one API process), "
        f"its demo history in and its spool drained, then {args.settle:g} s idle; the median of "
        f"{args.samples} readings a second apart; {machine()}.",
        "",
    ]
    for result in results:
        lines += [
            f"## `--worker-processes {result.layout}`: {len(result.rss)} processes",
            "",
            "| process | RSS | PSS |",
            "|---|---:|---:|",
            *(f"| {_label(name)} | {result.rss[name]:,.0f} MB | {result.pss[name]:,.0f} MB |"
              for name in sorted(result.rss, key=lambda n: -result.rss[n])),
            f"| **total** | **{result.total_rss:,.0f} MB** | **{result.total_pss:,.0f} MB** |",
            "",
        ]  # fmt: skip
    if {"each", "one"} <= set(by_layout) and not problems:
        each, one = by_layout["each"], by_layout["one"]
        ratio = one.total_rss / each.total_rss
        lines += [
            f"One worker process instead of one per kind: RSS {ratio:.3f}× "
            f"({each.total_rss - one.total_rss:,.0f} MB less), PSS "
            f"{one.total_pss / each.total_pss:.3f}× ({each.total_pss - one.total_pss:,.0f} MB "
            "less)" + (f"; target at most {args.target:g}×." if args.target else "."),
            "",
        ]
        if args.target is not None and ratio > args.target:
            problems.append(f"the one-process layout's RSS is {ratio:.2f}× the other's, above "
                            f"the target {args.target:g}×")  # fmt: skip
    lines.append("**PASS**" if not problems else "**FAILED**: " + "; ".join(problems))
    publish(args.report, lines)
    if problems:
        print("FAILED: " + "; ".join(problems), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
