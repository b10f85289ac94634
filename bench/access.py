"""Access benchmark: what a named key costs the decide path, against the write key.

One engine (``kairos up --workers none`` on an embedded Redis) with a Thompson-sampling
placement; a named key with ``track`` and ``decide`` made through ``POST /v1/keys``. wrk (-t1)
sends the same ``POST /v1/decide`` requests with the bootstrap write key (the baseline) and
with the named key, alternating rounds and keeping each one's best (other work on a shared
machine only slows a round down). Then, in process: the key check itself (``identify`` +
``permit``), per call, for the write key, a named key, and a wrong key.

The verdict: every phase must answer only 2xx (wrk's non-2xx and socket errors are counted);
else one ``FAILED:`` line and exit 1. Prints a table and writes bench/reports/access.md. Needs
``wrk`` (apt-get install wrk).

    python bench/access.py                 # 3 rounds of 10 s per key
    python bench/access.py --quick         # seconds, for the test
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    Load,
    Verdict,
    add_options,
    free_port,
    machine,
    need,
    parse,
    publish,
    start_engine,
    stop,
    wrk,
)
from edge.access.keys import Keyring  # noqa: E402
from edge.api.auth import identify, permit  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from edge.runtime.stores import redis_client  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "access.md"
WRITE_KEY, SECRET_KEY = "wk_bench", "sk_bench"
PHASES = ("write key", "named key")
QUICK = {"seconds": 1, "rounds": 1, "calls": 2_000}
HERO = {"default": "classic", "policy": {"kind": "thompson"},
        "variants": [{"key": "classic"}, {"key": "sale"}]}  # fmt: skip
_WRK = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic __AUTH__"
request = function()
  local body = '{"anonymousId":"a' .. math.random(0, 9999) .. '","placements":["home_hero"]}'
  return wrk.format(nil, "/v1/decide", nil, body)
end
"""


def _script(work: Path, name: str, key: str) -> Path:
    path = work / f"{name.replace(' ', '_')}.lua"
    path.write_text(_WRK.replace("__AUTH__", base64.b64encode(f"{key}:".encode()).decode()))
    return path


class _State:
    """What ``identify`` and ``permit`` read from an app's state, for the in-process timing."""

    def __init__(self, keyring: Keyring):
        self.settings = type("S", (), {"write_key": WRITE_KEY, "secret_key": SECRET_KEY})()
        self.keyring = keyring
        self.limits = None


def in_process(named: str, raw: dict[Any, Any], calls: int) -> dict[str, float]:
    """µs per key check (``identify`` + ``permit`` for ``decide``) for each kind of key."""
    keyring = Keyring()
    keyring.load(raw)
    state = _State(keyring)
    scope: dict[str, Any] = {"headers": [], "client": ("127.0.0.1", 1)}

    def check(key: str) -> None:
        try:
            permit(identify(key, state), "decide", scope, {}, state)
        except Exception:  # the wrong key: a 401 in the app
            pass

    found = {}
    for label, key in (("write key", WRITE_KEY), ("named key", named), ("wrong key", "kk_x" * 11)):
        seconds = min(timeit.repeat(lambda k=key: check(k), number=calls, repeat=3))  # type: ignore[misc]
        found[label] = seconds / calls * 1e6
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="default %(default)s")
    parser.add_argument("--connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--calls", type=int, default=200_000,
                        help="key checks timed in process (default %(default)s)")  # fmt: skip
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    if not need("wrk", "bench/access.py"):
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-access-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    verdict, best = Verdict(), dict[str, Load]()
    port = free_port()
    engine = start_engine(work / "data", port, "--redis-url", url, "--workers", "none",
                          keys=(WRITE_KEY, SECRET_KEY),
                          limits=(args.per_ip, args.per_key))  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer {SECRET_KEY}"}
        with httpx.Client(base_url=base, headers=admin, timeout=30) as http:
            made = http.put("/v1/placements/home_hero", json=HERO)
            verdict.answers("set-up", 1, int(made.status_code >= 300))
            answer = http.post("/v1/keys", json={"name": "shop-browser",
                                                 "scopes": ["track", "decide"]})  # fmt: skip
            verdict.answers("set-up", 1, int(answer.status_code >= 300))
        if not verdict.ok("set-up"):  # nothing to measure: say so, as every failed phase does
            return verdict.exit_code()
        named = answer.json()["key"]
        raw = redis_client(url).hgetall("{access}:keys")
        scripts = {"write key": _script(work, "write key", WRITE_KEY),
                   "named key": _script(work, "named key", named)}  # fmt: skip
        steps, step = len(PHASES) * args.rounds + 1, 0
        for round_ in range(args.rounds):
            for phase in PHASES:
                step += 1
                print(f"{step}/{steps} {phase} ({args.seconds} s, -c{args.connections}, round "
                      f"{round_ + 1}/{args.rounds})", flush=True)  # fmt: skip
                got = verdict.load(phase, wrk(base, args.seconds, args.connections,
                                              scripts[phase]))  # fmt: skip
                print(f"   {got.rps:,.0f} requests/s, p99 {got.p99}, {got.errors:,} errors",
                      flush=True)  # fmt: skip
                if phase not in best or got.rps > best[phase].rps:
                    best[phase] = got
        print(f"{steps}/{steps} in process: the key check, {args.calls:,} calls", flush=True)
        micro = in_process(named, raw, args.calls)
    finally:
        stop(engine)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    publish(args.report, _report(verdict, best, micro, args))
    return verdict.exit_code()


def _report(verdict: Verdict, best: dict[str, Load], micro: dict[str, float],
            args: argparse.Namespace) -> list[str]:  # fmt: skip
    lines = ["# Access: a named key on the decide path", "",
             f"`python bench/access.py` — {args.rounds} round(s) of {args.seconds} s per key, "
             f"wrk -t1 -c{args.connections}, best round kept; {machine()}.", "",
             "| key | requests/s | × write key | p99 | errors |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for phase in PHASES:
        if phase in best:
            r = best[phase]
            ratio = verdict.ratio(r.rps, best["write key"].rps, phase, "write key")
            lines.append(f"| {phase} | {r.rps:,.0f} | {ratio} | {r.p99} | "
                         f"{verdict.errors(phase)} |")  # fmt: skip
    lines += [
        "",
        "In process, the key check (`identify` + `permit` for `decide`), per call: "
        + ", ".join(f"{label} {us:.2f} µs" for label, us in micro.items())
        + ".",
        "",
    ]
    return lines + verdict.lines()


if __name__ == "__main__":
    raise SystemExit(main())
