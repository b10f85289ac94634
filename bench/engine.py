"""An engine to load: ``kairos up --demo`` on a temporary data dir, and its processes' memory.

``start`` writes the shared load-test config (the rate limiter in the path with limits far above
what Locust reaches here, ``bench.harness.QUIET_LIMIT``, unless told others), starts the engine
with fixed keys and waits until the demo history is in and the recommendation placements answer
with items, so the run measures decisions with real content. ``wait_decisions`` waits until the
decisions answered since a moment are in ClickHouse's ``decisions`` table.
``processes`` names the engine's processes (the API, each worker of ``run/*.pid``, Redis) and
``rss_mb`` reads their resident memory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import QUIET_LIMIT, write_limits

__all__ = ["Engine", "decisions_since", "processes", "rss_mb", "start", "stop", "wait_decisions"]

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY, SECRET_KEY = "wk_load", "sk_load"


@dataclass
class Engine:
    url: str
    write_key: str
    secret_key: str
    data_dir: Path | None = None  # known when local: for the worker pid files
    proc: subprocess.Popen[bytes] | None = None  # ours to stop
    log: Path | None = None


def limits_supported() -> bool:
    """Whether this engine's config knows the ``[limits]`` table (older ones refuse it)."""
    from edge.runtime.config import Config

    return "limits" in Config.__struct_fields__


def start(
    work: Path,
    port: int,
    api_workers: int | None = None,
    timeout: float = 240,
    limits: tuple[float, float] = (QUIET_LIMIT, QUIET_LIMIT),
    extra: Sequence[str] = (),
) -> Engine:
    """``kairos up --demo`` in ``work/data``, ready for load (see the module's docstring);
    ``limits``: its ``[limits]`` per_ip and per_key; ``extra``: more options of ``kairos up``."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    if limits_supported():
        write_limits(data, *limits)
    else:
        print("note: this engine's config has no [limits] table yet; kairos.toml not written",
              file=sys.stderr)  # fmt: skip
    log = work / "engine.log"
    argv = [sys.executable, "-m", "edge.cli", "up", "--demo", "--port", str(port),
            "--data-dir", str(data), "--log-format", "json"]  # fmt: skip
    if api_workers is not None:
        argv += ["--api-workers", str(api_workers)]
    argv += extra
    env = {**os.environ, "KAIROS_WRITE_KEY": WRITE_KEY, "KAIROS_SECRET_KEY": SECRET_KEY}
    with open(log, "ab") as out:  # the child keeps its own copy
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, cwd=ROOT)
    engine = Engine(f"http://127.0.0.1:{port}", WRITE_KEY, SECRET_KEY, data, proc, log)
    try:
        ready(engine, timeout)
    except BaseException:
        stop(engine)
        raise
    return engine


def ready(engine: Engine, timeout: float = 240) -> None:
    """Wait until the engine answers, its demo history is stored (when it is ours) and a
    recommendation placement returns items."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=engine.url, timeout=5) as client:
        _until(deadline, engine, lambda: _get(client, "/healthz") is not None, "answers /healthz")
        if engine.log is not None:
            _until(deadline, engine, lambda: b"demo history sent" in engine.log.read_bytes(),
                   "has sent its demo history")  # fmt: skip
            _until(deadline, engine, lambda: _spool(client) < 50, "has drained its spool")
        ask = {"placements": ["pdp_recs"], "anonymousId": "load-probe", "writeKey":
               engine.write_key, "context": {"item": "sku-sho-1"}}  # fmt: skip

        def has_items() -> bool:
            answer = client.post("/v1/decide", json=ask)
            if answer.status_code == 404:
                raise RuntimeError(f"{engine.url} has no demo placements: run `kairos up --demo`")
            decision = answer.json().get("decisions", {}).get("pdp_recs", {})
            return answer.status_code == 200 and bool(decision.get("items"))

        _until(deadline, engine, has_items, "recommends items")


def decisions_since(engine: Engine, since: float) -> int:
    """Decisions in ClickHouse's ``decisions`` table made since ``since`` (epoch seconds)."""
    query = ("SELECT count() FROM decisions WHERE "
             f"toUnixTimestamp64Milli(timestamp) >= {int(since * 1000)}")  # fmt: skip
    answer = httpx.post(f"{engine.url}/v1/sql", json={"query": query}, timeout=30,
                        headers={"Authorization": f"Bearer {engine.secret_key}"})  # fmt: skip
    answer.raise_for_status()
    return int(answer.json()["rows"][0][0])


def wait_decisions(engine: Engine, since: float, expected: int, timeout: float = 60) -> int:
    """Decisions stored since ``since``, once there are ``expected`` (the sink may lag the
    load) or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while (found := decisions_since(engine, since)) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def _get(client: httpx.Client, path: str) -> dict[str, object] | None:
    try:
        answer = client.get(path)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 200 else None


def _spool(client: httpx.Client) -> int:
    health = _get(client, "/healthz") or {}
    spool = health.get("spool")
    return int(spool.get("length", 1 << 30)) if isinstance(spool, dict) else 1 << 30


def _until(deadline: float, engine: Engine, check: object, what: str) -> None:
    while time.monotonic() < deadline:
        if engine.proc is not None and engine.proc.poll() is not None:
            tail = engine.log.read_text()[-3000:] if engine.log else ""
            raise RuntimeError(f"the engine exited ({engine.proc.returncode}):\n{tail}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise RuntimeError(f"the engine at {engine.url} never {what}")


def stop(engine: Engine) -> None:
    """Ctrl-C our engine and wait for it (then SIGKILL)."""
    if engine.proc is None or engine.proc.poll() is not None:
        return
    engine.proc.send_signal(signal.SIGINT)
    try:
        engine.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        engine.proc.kill()
        engine.proc.wait()


def _parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes(data_dir: Path | None, root: int | None = None) -> dict[str, int]:
    """The engine's processes by name: each worker of ``data_dir/run/*.pid`` (with
    ``--api-workers N`` the API processes too: ``api-1`` …), the ``kairos up`` process (``root``,
    else the workers' parent when it is a ``kairos`` process: ``api``, or ``up`` when it only
    supervises API processes), and the rest of its descendants (``redis``, any other Python
    process as ``other-1`` …)."""
    named: dict[str, int] = {}
    run = data_dir / "run" if data_dir is not None else None
    for pidfile in sorted(run.glob("*.pid")) if run is not None and run.exists() else []:
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if Path(f"/proc/{pid}").exists():
            named[pidfile.stem] = pid
    parents = _parents()
    if root is None and named:
        candidate = parents.get(next(iter(named.values())), 0)
        if "kairos" in _cmdline(candidate) or "edge.cli" in _cmdline(candidate):
            root = candidate
    if root is None:
        return named
    # With --api-workers N the API processes have pid files (api-1 …): the root supervises.
    named["up" if any(n.startswith("api-") for n in named) else "api"] = root
    known, extra = set(named.values()), 1
    family, queue = [], [root]
    while queue:
        parent = queue.pop()
        children = sorted(pid for pid, ppid in parents.items() if ppid == parent)
        family += children
        queue += children
    for pid in family:
        if pid in known:
            continue
        if "redis-server" in _cmdline(pid):
            named["redis"] = pid
        elif "python" in _cmdline(pid) or "kairos" in _cmdline(pid):
            named[f"other-{extra}"] = pid
            extra += 1
    return named


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (None once it is gone)."""
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def keys_of(data_dir: Path) -> tuple[str, str]:
    """The write and secret keys a data dir's engine generated (``keys.json``)."""
    keys = json.loads((data_dir / "keys.json").read_text())
    return keys["write_key"], keys["secret_key"]
