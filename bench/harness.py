"""What the benchmarks share: servers to load, wrk and its output, limits that stay out of the
way, and the verdict on every phase's answers.

Every load phase counts the answers that were not 2xx (wrk: ``Non-2xx or 3xx responses`` and its
socket errors; Locust: failures; in-process loops: each answer's status) and the report prints
them. ``Verdict`` fails the run — exit 1 and one line, ``FAILED: phase kairos had 12 non-2xx
answers of 80,000`` — when a phase had any, or when a benchmark that decides finds fewer
decisions logged than it was given 200 answers for. A ratio between two phases is printed only
when neither had an error: a 429 costs the engine far less than a decision, so a ratio over
errors flatters it.

Limits: the engine's rate limiter (``edge.api.limits``) stays in the path of every request the
benchmarks send, with limits far above what one load generator on one machine reaches
(``QUIET_LIMIT`` requests/s per IP and per key): it does its bookkeeping on each request and
never answers 429. ``--per-key``/``--per-ip`` set other limits, e.g. a binding one, to see the
verdict fail.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QUIET_LIMIT",
    "ROOT",
    "Load",
    "Verdict",
    "add_options",
    "free_port",
    "machine",
    "need",
    "parse",
    "parse_wrk",
    "publish",
    "serve_app",
    "spool_decisions",
    "start_engine",
    "stop",
    "wait_http",
    "wait_port",
    "wrk",
    "write_limits",
]

ROOT = Path(__file__).resolve().parent.parent
# Requests/s per IP and per key: far above the few tens of thousands one wrk or Locust process
# reaches here, so the limiter runs on every request and never binds.
QUIET_LIMIT = 1_000_000.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 90, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers (``proc``: give up as soon as it has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def add_options(parser: argparse.ArgumentParser, report: Path | None, engine: bool = True) -> None:
    """The options every benchmark has: ``--quick``, ``--report`` (when it writes one) and,
    when it starts an engine, its limits."""
    parser.add_argument("--quick", action="store_true",
                        help="the smallest run, in seconds (what the test runs)")  # fmt: skip
    if report is not None:
        parser.add_argument("--report", type=Path, default=report,
                            help="the Markdown report (default %(default)s)")  # fmt: skip
    if engine:
        parser.add_argument("--per-key", type=float, default=QUIET_LIMIT, metavar="RPS",
                            help="the engine's [limits] per_key (default %(default)g: in the "
                            "path, never binding)")  # fmt: skip
        parser.add_argument("--per-ip", type=float, default=QUIET_LIMIT, metavar="RPS",
                            help="the engine's [limits] per_ip (default %(default)g)")  # fmt: skip


def parse(
    parser: argparse.ArgumentParser, quick: dict[str, Any], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, ``quick`` replaces the defaults (given options win)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in args:
        parser.set_defaults(**quick)
    return parser.parse_args(args)


def write_limits(data_dir: Path, per_ip: float = QUIET_LIMIT, per_key: float = QUIET_LIMIT) -> None:
    """The engine's ``[limits]``, in the ``kairos.toml`` it reads from its data dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "kairos.toml").write_text(f"[limits]\nper_ip = {per_ip:g}\nper_key = {per_key:g}\n")


def _pinned(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def start_engine(
    data_dir: Path,
    port: int,
    *extra: str,
    keys: tuple[str, str] = ("wk_bench", "sk_bench"),
    limits: tuple[float, float] = (QUIET_LIMIT, QUIET_LIMIT),
    cpus: str | None = None,
    timeout: float = 120,
    root: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """``kairos up`` on ``data_dir`` with ``keys`` (write, secret) and ``limits`` (per IP, per
    key) once it answers; its log goes to ``engine.log`` beside the data dir. ``cpus``: pin it
    (and so its workers and its embedded Redis, which inherit the affinity) with taskset;
    ``root``: the source tree it runs from (another revision's worktree, for a baseline)."""
    write_limits(data_dir, *limits)
    env = {**os.environ, "KAIROS_WRITE_KEY": keys[0], "KAIROS_SECRET_KEY": keys[1]}
    argv = [sys.executable, "-m", "edge.cli", "up", "--port", str(port), "--data-dir",
            str(data_dir), "--log-format", "json", *extra]  # fmt: skip
    log = data_dir.parent / "engine.log"
    with open(log, "ab") as out:  # the child keeps its own copy
        proc = subprocess.Popen(_pinned(cpus, argv), stdout=out, stderr=out, env=env, cwd=root)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout, proc)
    except RuntimeError as exc:
        stop(proc)
        raise RuntimeError(f"{exc}; the end of its log:\n{log.read_text()[-3000:]}") from None
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Ctrl-C and wait (then SIGKILL)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_app(
    work: Path, name: str, source: str, env: dict[str, str] | None = None, cpus: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A small ASGI app (``source`` defines ``app``) on one uvicorn worker, once it listens."""
    (work / f"{name}.py").write_text(textwrap.dedent(source))
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"{name}:app", "--port", str(port), "--log-level",
            "warning", "--no-access-log"]  # fmt: skip
    proc = subprocess.Popen(_pinned(cpus, argv), cwd=work, env={**os.environ, **(env or {})})
    try:
        wait_port(port)
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    return proc, port


@dataclass
class Load:
    """One wrk run: what it sent and what came back."""

    requests: int  # answers wrk counted (any status)
    seconds: float
    rps: float
    p50: str
    p90: str
    p99: str
    non2xx: int  # "Non-2xx or 3xx responses"
    socket_errors: int  # connect, read, write and timeout errors

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @property
    def ok(self) -> int:
        """2xx answers."""
        return self.requests - self.non2xx


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def parse_wrk(out: str) -> Load:
    """wrk's ``--latency`` report as a ``Load``."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(m?s|m)\b", out, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    if done is None or rps is None:
        raise ValueError(f"not a wrk report:\n{out[-2000:]}")
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return Load(
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * scale,
        rps=float(rps.group(1)),
        p50=latency.get("50", "?"),
        p90=latency.get("90", "?"),
        p99=latency.get("99", "?"),
        non2xx=_count(r"Non-2xx or 3xx responses: (\d+)", out),
        socket_errors=sum(map(int, sockets.groups())) if sockets else 0,
    )


def wrk(
    url: str,
    seconds: float,
    connections: int,
    script: Path,
    *script_args: str,
    cpus: str | None = None,
) -> Load:
    """One wrk run (-t1, ``--latency``) against ``url`` with a Lua ``script``; ``cpus``: pin
    wrk with taskset."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "-s", str(script), url]  # fmt: skip
    if script_args:
        argv += ["--", *script_args]
    done = subprocess.run(_pinned(cpus, argv), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    return parse_wrk(done.stdout)


def need(tool: str, script: str) -> bool:
    """Whether ``tool`` is installed; says what to do when it is not."""
    if shutil.which(tool):
        return True
    print(f"{script} needs {tool}: apt-get install -y {tool}", file=sys.stderr)
    return False


@dataclass
class _Phase:
    answers: int = 0
    errors: int = 0
    what: str = "non-2xx answers"
    decided: int | None = None  # 200 answers that each carry decisions to log …
    logged: int | None = None  # … and the decisions found logged for them


@dataclass
class Verdict:
    """Each phase's answers and errors; the run fails if any phase had an error."""

    error: str = "non-2xx answer"  # what an error is called (Locust's: "failed request")
    phases: dict[str, _Phase] = field(default_factory=dict)

    def load(self, phase: str, load: Load) -> Load:
        """A wrk phase: its non-2xx answers and socket errors."""
        what = "non-2xx answers" if not load.socket_errors else (
            f"non-2xx answers or socket errors ({load.non2xx:,} non-2xx)")  # fmt: skip
        self.answers(phase, load.requests, load.errors, what)
        return load

    def answers(self, phase: str, total: int, errors: int, what: str = "non-2xx answers") -> None:
        """Add ``total`` answers to ``phase``, ``errors`` of them failed (``what`` says how)."""
        entry = self.phases.setdefault(phase, _Phase())
        entry.answers += total
        entry.errors += errors
        if errors:
            entry.what = what

    def decisions(self, phase: str, decided: int, logged: int) -> None:
        """``decided``: decisions given in 200 answers; ``logged``: those found in the log."""
        entry = self.phases.setdefault(phase, _Phase())
        entry.decided = (entry.decided or 0) + decided
        entry.logged = (entry.logged or 0) + logged

    def ok(self, *phases: str) -> bool:
        return all(p in self.phases and not self._failure(p) for p in phases)

    def ratio(self, value: float, base: float, phase: str, base_phase: str, digits: int = 2) -> str:
        """``value / base`` when neither phase had an error, else a dash."""
        if not self.ok(phase, base_phase) or not base:
            return "–"
        return f"{value / base:.{digits}f}"

    def errors(self, phase: str) -> str:
        """The error count as the table prints it."""
        entry = self.phases.get(phase)
        return "–" if entry is None else f"{entry.errors:,}"

    def _failure(self, phase: str) -> str | None:
        p = self.phases[phase]
        if p.errors:
            return f"phase {phase} had {p.errors:,} {p.what} of {p.answers:,}"
        if p.decided is not None and (p.logged or 0) < p.decided:
            return (f"phase {phase} logged {p.logged or 0:,} decisions for {p.decided:,} "
                    "decisions answered with 200")  # fmt: skip
        return None

    def failures(self) -> list[str]:
        return [f for p in self.phases if (f := self._failure(p))]

    def lines(self) -> list[str]:
        """The report's verdict: PASS, or what failed."""
        failed = self.failures()
        if not failed:
            total = sum(p.answers for p in self.phases.values())
            return [f"**PASS**: no phase had a {self.error} ({total:,} answers in all)"
                    + ("; every decision answered was logged." if any(
                        p.decided is not None for p in self.phases.values()) else ".")]  # fmt: skip
        return ["**FAILED**: " + "; ".join(failed) + ". Ratios are left out for those phases."]

    def exit_code(self) -> int:
        """0 if every phase passed; else prints the one ``FAILED:`` line and returns 1."""
        failed = self.failures()
        if not failed:
            return 0
        print("FAILED: " + "; ".join(failed), flush=True)
        return 1


def spool_decisions(client: Any, entries: bool = False) -> Any:
    """Decisions in the spool's stream (``{spool}:log``) so far; with ``entries``, also the
    stream entries they came in (the decisions of one event-loop tick share an entry). Only
    meaningful while no worker trims the stream (``--workers none``, or the sink paused)."""
    found = decisions = 0
    last = "-"
    while batch := client.xrange("{spool}:log", min=last, count=10_000):
        for _id, fields in batch:
            if b"d" in fields:
                found, decisions = found + 1, decisions + int(fields[b"n"])
        last = "(" + batch[-1][0].decode()
    return (decisions, found) if entries else decisions


def publish(report: Path, lines: list[str]) -> None:
    """Print a report and write it (Markdown) to ``report``."""
    text = "\n".join(lines) + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    print()
    print(text)
    try:
        shown = report.resolve().relative_to(ROOT)
    except ValueError:
        shown = report
    print(f"(written to {shown})", flush=True)


def machine() -> str:
    """A note on the machine: cores and load (other work on it makes figures noisier)."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.1f} (1 min) / {five:.1f} (5 min) at the end"
