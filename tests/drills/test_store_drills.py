"""Failure drills of the server and its stores, against ``kairos up`` child processes.

Each drill counts exactly what the engine acknowledged while something is killed, stopped or
full, and checks what ClickHouse and Redis hold afterwards. Each is bounded by a Deadline; the
file costs about 3.5 minutes on a loaded 2-core machine (the ClickHouse drill alone waits 30 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from decisions.catalog import REFRESH_SECONDS
from edge.cli import main
from tests.conftest import SECRET_KEY, WRITE_KEY, Process, basic
from tests.drills.conftest import (
    Deadline,
    Sender,
    alive,
    pid_of,
    stopped,
    stored_counts,
    wait_gone,
    wait_stored,
)

# Drills: minutes of real processes under load and failure (`pytest -m 'not slow'` skips them).
pytestmark = pytest.mark.slow


def _spool(process: Process) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(process.data_dir / "redis" / "redis.sock"))


def _acked(senders: list[Sender]) -> int:
    return sum(len(s.acked) for s in senders)


def test_sigkill_under_load_loses_no_acknowledged_message(drill_engine: Any) -> None:
    """Two API processes under load: SIGKILL one of them, then `kairos up` itself. Every
    message answered 200 is in ClickHouse after the restart, exactly once."""
    deadline = Deadline(180)
    engine = drill_engine("--api-workers", "2", "--workers", "sink,profiles").start(timeout=90)
    senders = [Sender(engine.url, f"a{i}", size=20) for i in range(3)]
    for sender in senders:
        sender.start()
    deadline.wait_for("load", lambda: _acked(senders) >= 600)
    first = pid_of(engine, "api-1")
    os.kill(first, signal.SIGKILL)  # one API process: the supervisor restarts it
    before = _acked(senders)
    deadline.wait_for("the restarted API process", lambda: pid_of(engine, "api-1") != first)
    deadline.wait_for("more load", lambda: _acked(senders) >= before + 600)
    engine.kill()  # all of kairos up, mid-stream
    time.sleep(0.5)
    for sender in senders:
        sender.finish()
    acked = set().union(*(s.acked for s in senders))
    sent = set().union(*(s.sent for s in senders))
    statuses = sum((s.statuses for s in senders), Counter())
    # Killed API processes drop connections; one stopping as Redis stops may answer 503.
    assert {k for k in statuses if isinstance(k, int)} <= {200, 503}, statuses
    wait_gone(engine, deadline)
    engine.start(timeout=min(90, deadline.left()))

    for prefix in ("a0", "a1", "a2"):
        wanted = {m for m in acked if m.startswith(prefix + "-")}
        wait_stored(engine, prefix, wanted, deadline)
        counts = stored_counts(engine, prefix)
        assert wanted <= counts.keys()
        assert set(counts) <= sent
        assert {m: n for m, n in counts.items() if n != 1} == {}
    assert len(acked) >= 1200


def test_redis_restart_keeps_state_and_decide_never_fails(drill_engine: Any) -> None:
    """The embedded Redis stuck for 3 s, then SIGKILLed: `kairos up` restarts it from its AOF.
    Profiles and policy state survive; /v1/decide answers 200 (defaults) all along; ingestion
    answers 200 or 503 with Retry-After, never another 5xx."""
    deadline = Deadline(150)
    engine = drill_engine("--api-workers", "2", "--workers", "sink,profiles,rewards")
    engine.start(timeout=90)
    secret = {"Authorization": f"Bearer {SECRET_KEY}"}
    # A connection per request: both API processes answer some.
    fresh = httpx.Limits(max_keepalive_connections=0)
    client = httpx.Client(base_url=engine.url, timeout=30, limits=fresh)
    hero = {
        "name": "Home hero",
        "default": "classic",
        "policy": {"kind": "thompson"},
        "variants": [{"key": "classic", "content": {"n": 1}}, {"key": "sale", "content": {"n": 2}}],
    }
    assert client.put("/v1/placements/hero", json=hero, headers=secret).status_code in (200, 201)
    write = basic(WRITE_KEY)
    traits = {"plan": "gold", "visits": 7}
    answer = client.post("/v1/identify", json={"userId": "keep", "traits": traits}, headers=write)
    assert answer.status_code == 200

    answers: list[str] = []

    def decide(visitor: str) -> dict[str, Any] | None:
        answer = client.post(
            "/v1/decide", json={"anonymousId": visitor, "placements": ["hero"]}, headers=write
        )
        answers.append(f"{answer.status_code} {answer.text[:300]}")
        return answer.json()["decisions"].get("hero") if answer.status_code == 200 else None

    # Every API process refreshes its catalog every REFRESH_SECONDS; one that was still starting
    # during the PUT (not listening yet, so the probes below could not reach it) loaded before
    # the PUT and has refreshed since by the end of this wait.
    time.sleep(2 * REFRESH_SECONDS + 0.5)
    # Twenty in a row: the kernel picks the process per connection, so all of them landing on
    # one process that has the placement while the other has not is a one-in-500,000 chance.
    deadline.wait_for("the placement in both API processes", lambda: all(
        (d := decide("probe")) and "fallback" not in d for _ in range(20)))  # fmt: skip
    for visitor in range(40):
        decision = decide(f"v{visitor}")
        assert decision is not None, answers[-1]
        click = {"anonymousId": f"v{visitor}", "event": "Decision Clicked",
                 "properties": {"decisionId": decision["decisionId"]}}  # fmt: skip
        assert client.post("/v1/track", json=click, headers=write).status_code == 200

    def learned() -> dict[str, Any] | None:
        state = client.get("/v1/placements/hero", headers=secret).json()["learned"]
        return state if state["decisions"] >= 40 else None

    def profile() -> dict[str, Any] | None:
        answer = client.get("/v1/profiles/user_id:keep", headers=secret)
        return answer.json() if answer.status_code == 200 else None

    before = deadline.wait_for("the policy to learn", learned)
    person = deadline.wait_for("the profile", profile)
    assert {k: person["traits"][k] for k in traits} == traits

    decides: Counter[int | str] = Counter()
    fallbacks: Counter[str] = Counter()
    tracks: Counter[int | str] = Counter()
    no_retry_after = []
    stop = threading.Event()

    def hammer_decide() -> None:
        with httpx.Client(base_url=engine.url, timeout=10, limits=fresh) as own:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"anonymousId": f"h{n}", "placements": ["hero"]}
                try:
                    answer = own.post("/v1/decide", json=body, headers=write)
                except httpx.HTTPError as exc:
                    decides[type(exc).__name__] += 1
                    continue
                decides[answer.status_code] += 1
                if answer.status_code == 200:
                    fallbacks[answer.json()["decisions"]["hero"].get("fallback", "none")] += 1

    def hammer_track() -> None:
        with httpx.Client(base_url=engine.url, timeout=30) as own:
            while not stop.is_set():
                body = {"anonymousId": "t", "event": "Outage Probe"}
                try:
                    answer = own.post("/v1/track", json=body, headers=write)
                except httpx.HTTPError as exc:
                    tracks[type(exc).__name__] += 1
                    continue
                tracks[answer.status_code] += 1
                if answer.status_code == 503 and "retry-after" not in answer.headers:
                    no_retry_after.append(answer.text)
                time.sleep(0.01)

    threads = [threading.Thread(target=f, daemon=True) for f in (hammer_decide, hammer_track)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    old = pid_of(engine, "redis")
    with stopped(old):
        time.sleep(3.0)  # stuck: connections open, no answers
        os.kill(old, signal.SIGKILL)  # then gone; the engine restarts it
    deadline.wait_for(
        "a new redis-server", lambda: not alive(old) and pid_of(engine, "redis") != old
    )

    def recovered() -> bool:
        decision = decide("after")
        return decision is not None and "fallback" not in decision

    deadline.wait_for("decisions from the policy again", recovered, every=0.2)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert set(decides) == {200}, decides  # not one error, not one dropped connection
    assert fallbacks["none"] > 0 and sum(fallbacks.values()) > fallbacks["none"], fallbacks
    assert set(tracks) <= {200, 503}, tracks
    assert no_retry_after == []
    after = learned()
    assert after is not None
    by_variant = {v["variant"]: v for v in before["variants"]}
    for variant in after["variants"]:  # nothing forgotten (later decisions may add to it)
        assert variant["decisions"] >= by_variant[variant["variant"]]["decisions"]
        assert variant["reward"] >= by_variant[variant["variant"]]["reward"]
    assert {k: profile()["traits"][k] for k in traits} == traits  # type: ignore[index]
    client.close()


def test_clickhouse_away_for_30_s_ingestion_answers_and_the_spool_drains(
    drill_engine: Any,
) -> None:
    """The process owning embedded ClickHouse (the sink) stopped for 30 s under steady
    ingestion into two API processes: every request answers 200 meanwhile, and afterwards
    ClickHouse holds exactly the acknowledged messages."""
    deadline = Deadline(150)
    # One instance: the sink is the only worker, and there is one (it owns chdb).
    engine = drill_engine("--api-workers", "2", "--workers", "sink", instances=1)
    engine.start(timeout=90)
    spool = _spool(engine)
    sender = Sender(engine.url, "c", size=10, pause=0.02)
    sender.start()
    deadline.wait_for("load", lambda: len(sender.acked) >= 200)
    with stopped(pid_of(engine, "sink")):
        entries, acked = spool.xlen("{spool}:log"), sender.statuses[200]
        outage = time.monotonic()
        # Health checks say so at once instead of waiting on the stopped process.
        health = httpx.get(engine.url + "/healthz", timeout=20)
        assert health.status_code == 503, health.text
        assert health.json()["clickhouse"].startswith("error: the store process")
        assert health.json()["redis"] == "ok"
        time.sleep(30 - (time.monotonic() - outage))
        # The spool kept everything: it grew by an entry per request acknowledged meanwhile.
        meanwhile = sender.statuses[200] - acked
        assert spool.xlen("{spool}:log") - entries >= meanwhile - 1 and meanwhile > 100
    time.sleep(2.0)
    sender.finish()
    spool.close()
    assert set(sender.statuses) == {200}, sender.statuses
    assert sender.acked == sender.sent
    wait_stored(engine, "c", sender.acked, deadline)
    counts = stored_counts(engine, "c")
    assert counts.keys() == sender.acked
    assert set(counts.values()) == {1}


def test_a_full_spool_answers_503_and_loses_nothing(drill_engine: Any) -> None:
    """With the sink stopped the spool reaches --spool-limit: requests get 503 + Retry-After.
    Everything acknowledged is stored once the sink is back, nothing refused is, and the
    refused messages sent again are accepted."""
    deadline = Deadline(120)
    limit = 30
    engine = drill_engine("--spool-limit", str(limit), "--workers", "sink", instances=1)
    engine.start(timeout=90)  # (one sink, one partition: the limit is a partition's)
    spool = _spool(engine)
    sender = Sender(engine.url, "d", size=10)
    with httpx.Client(timeout=30) as client:
        with stopped(pid_of(engine, "sink")):
            room = limit - spool.xlen("{spool}:log")
            answers = [sender.batch(client) for _ in range(room + 20)]
        assert answers == [200] * room + [503] * 20
        assert sender.no_retry_after == 0
        assert len(sender.acked) == 10 * room and len(sender.refused) == 200
        wait_stored(engine, "d", sender.acked, deadline)
        assert stored_counts(engine, "d") == dict.fromkeys(sender.acked, 1)

        # Back-pressure lifts once the sink has drained the spool; the refused ids are new.
        deadline.wait_for("the spool to drain", lambda: spool.xlen("{spool}:log") < limit)
        refused = sorted(sender.refused)
        for start in range(0, len(refused), 10):
            body = {"batch": [{"type": "track", "event": "Drill", "userId": "r", "messageId": m}
                              for m in refused[start : start + 10]]}  # fmt: skip
            answer = client.post(engine.url + "/v1/batch", json=body, headers=basic(WRITE_KEY))
            assert answer.status_code == 200, answer.text
    spool.close()
    everything = sender.acked | sender.refused
    wait_stored(engine, "d", everything, deadline)
    assert stored_counts(engine, "d") == dict.fromkeys(everything, 1)


def test_api_workers_need_the_process_that_owns_clickhouse(tmp_path: Any, capsys: Any) -> None:
    """Several API processes cannot each own embedded ClickHouse: refused before anything
    starts, naming the way out."""
    kairos = str(Path(sys.executable).with_name("kairos"))
    done = subprocess.run(
        [kairos, "up", "--data-dir", str(tmp_path), "--workers", "none", "--api-workers", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "add sink to --workers, or give --clickhouse-url" in done.stderr
    assert not (tmp_path / "redis" / "redis.pid").exists()
    assert main(["up", "--data-dir", str(tmp_path), "--api-workers", "0"]) == 2
    assert "--api-workers must be at least 1" in capsys.readouterr().err
