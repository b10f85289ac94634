"""Run ``bench/locustfile.py`` headless in a child process and read back what it measured.

Locust runs as ``python -m locust`` (its gevent patching stays out of this process) with
``--csv PREFIX --csv-full-history``; while it runs, a progress line shows the elapsed time and
the current requests/s, and the engine's processes are sampled for resident memory once a
second. ``Run`` holds the parsed CSVs (whole-run stats per endpoint, the per-second history,
failures), the decision outcomes the users counted, the memory samples and Locust's own
warnings (a load generator short of CPU says so).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.engine import rss_mb
from edge.cli.progress import Progress

__all__ = ["Run", "run"]

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


@dataclass
class Run:
    label: str
    seconds: int
    stats: list[dict[str, str]]  # _stats.csv: one row per endpoint, then "Aggregated"
    history: list[dict[str, str]]  # _stats_history.csv: a row per endpoint per second
    failures: list[dict[str, str]]
    counters: dict[str, int]
    memory: list[tuple[float, str, int, float]] = field(default_factory=list)  # (s, name, pid, MB)
    warnings: list[str] = field(default_factory=list)
    exit_code: int = 0

    def endpoints(self) -> dict[str, dict[str, str]]:
        return {row["Name"]: row for row in self.stats if row["Name"] != "Aggregated"}

    def total(self) -> dict[str, str]:
        return next(row for row in self.stats if row["Name"] == "Aggregated")


def run(
    url: str,
    users: int,
    seconds: int,
    prefix: Path,
    keys: tuple[str, str],
    *,
    label: str = "load",
    spawn_rate: float | None = None,
    think: float = 1.0,
    rate: float = 0.0,
    seed: int = 7,
    watch: Callable[[], dict[str, int]] | None = None,
) -> Run:
    """Locust for ``seconds`` with ``users`` users against ``url``; CSVs under ``prefix``.
    ``watch``: the processes whose memory to sample (name → pid), asked again every second."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    counters = prefix.with_name(prefix.name + "_counters.json")
    log = prefix.with_name(prefix.name + "_locust.log")
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(spawn_rate or max(1.0, users / 5)), "-t", f"{seconds}s",
        "--csv", str(prefix), "--csv-full-history", "--host", url, "--only-summary",
        "--loglevel", "WARNING", "--stop-timeout", "2", "--exit-code-on-error", "0",
        "--write-key", keys[0], "--secret-key", keys[1], "--think", str(think),
        "--rate", str(rate), "--seed", str(seed), "--counters", str(counters),
    ]  # fmt: skip
    memory: list[tuple[float, str, int, float]] = []
    bar = Progress(seconds, label)
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                elapsed = time.monotonic() - start
                for name, pid in (watch() if watch else {}).items():
                    mb = rss_mb(pid)
                    if mb is not None:
                        memory.append((elapsed, name, pid, mb))
                rps = _current_rps(prefix)
                bar.label = f"{label} {users} users" + (f", {rps:,.0f} req/s" if rps else "")
                if bar.done < bar.total:
                    bar.advance(min(int(elapsed) - bar.done, bar.total - bar.done))
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if bar.done < bar.total:
        bar.advance(bar.total - bar.done)
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust failed ({proc.returncode}):\n{text[-3000:]}")
    return Run(
        label=label,
        seconds=seconds,
        stats=_rows(Path(f"{prefix}_stats.csv")),
        history=_rows(Path(f"{prefix}_stats_history.csv")),
        failures=_rows(Path(f"{prefix}_failures.csv")),
        counters=json.loads(counters.read_text()) if counters.exists() else {},
        memory=memory,
        warnings=_warnings(text),
        exit_code=proc.returncode,
    )


def _warnings(log: str) -> list[str]:
    """Locust's own warnings and errors (e.g. its CPU use above 90%), each once."""
    found = {line.split(": ", 1)[-1] for line in log.splitlines()
             if "/WARNING/" in line or "/ERROR/" in line}  # fmt: skip
    return sorted(found)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _current_rps(prefix: Path) -> float:
    """The latest Aggregated requests/s of the history (Locust writes it every second or so)."""
    rows = _rows(Path(f"{prefix}_stats_history.csv"))
    for row in reversed(rows):
        if row.get("Name") == "Aggregated":
            try:
                return float(row["Requests/s"])
            except (KeyError, ValueError):
                return 0.0
    return 0.0
