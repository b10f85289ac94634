"""No secret in what ``kairos up`` prints or logs: the banner names where the keys are, and debug
logs of wrong keys, bad bodies, the dashboard's sign-in and a signed journey webhook carry
neither key, no Authorization header, no webhook or on-chain secret and no session cookie.

About 30 s: one ``kairos up`` child process (its own Redis and chdb) at debug level.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.runtime.keys import load_keys
from edge.runtime.logs import JsonFormatter, TextFormatter, redact
from edge.runtime.settings import Settings
from edge.runtime.up import _banner
from tests.conftest import IDENTITY_SECRET, SECRET_KEY, WRITE_KEY, Process, basic


class _Hook(BaseHTTPRequestHandler):
    """A webhook receiver that fails the first delivery (the worker logs and retries it)."""

    received: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(dict(self.headers))
        self.send_response(500 if len(self.received) == 1 else 200)
        self.end_headers()
        self.wfile.write(b"try again")

    def log_message(self, *args: Any) -> None:
        pass


def _drive(engine: Process, hook: str) -> list[str]:
    """Requests of every kind, right and wrong; returns the secrets the engine handed out."""
    url = engine.url
    secret = {"Authorization": f"Bearer {SECRET_KEY}"}
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as client:
        for headers in (basic("wk_wrong"), {"Authorization": f"Bearer {SECRET_KEY}x"},
                        {"Authorization": "Digest nonsense"}, basic(SECRET_KEY)):  # fmt: skip
            client.post("/v1/track", json={"userId": "u", "event": "E"}, headers=headers)
            client.post("/v1/decide", json={"anonymousId": "a", "placements": ["x"]},
                        headers=headers)  # fmt: skip
            client.get("/v1/profiles/user_id:u", headers=headers)
        for body in (f'{{"writeKey": "{WRITE_KEY}", "event": ', f'{{"writeKey": "{SECRET_KEY}"}}'):
            client.post("/v1/track", content=body, headers={"Content-Type": "application/json"})
        client.post("/v1/sql", json={"query": f"SELECT nonsense('{SECRET_KEY}')"}, headers=secret)
        client.post("/v1/sql", json={"query": f"SELECT '{WRITE_KEY}'"}, headers=basic(WRITE_KEY))
        client.post("/v1/onchain", content=b"{}", headers={"X-Kairos-Signature": "t=1,v1=00"})
        onchain = client.get("/v1/onchain", headers=secret).json()["secret"]
        for key in (WRITE_KEY, SECRET_KEY):
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/dashboard/login").text)
            assert csrf is not None
            client.post("/dashboard/login", data={"csrf": csrf.group(1), "key": key})
        session = client.cookies.get("kairos_session")
        assert session and client.get("/dashboard").status_code == 200
        journey = {
            "trigger": {"kind": "event", "event": "Signed Up"},
            "start": "hello",
            "steps": {"hello": {"type": "webhook", "url": hook, "next": "end"},
                      "end": {"type": "end"}},
        }  # fmt: skip
        assert client.put("/v1/journeys/welcome", json=journey, headers=secret).status_code < 300
        webhook = client.get("/v1/journeys", headers=secret).json()["webhook_secret"]
        track = {"userId": "ada", "event": "Signed Up", "writeKey": WRITE_KEY}
        deadline = time.monotonic() + 60  # the journeys worker loads the journey shortly
        while len(_Hook.received) < 2:
            assert time.monotonic() < deadline, "the webhook was not delivered and retried"
            client.post("/v1/track", json=track)
            time.sleep(1.0)
    return [onchain, webhook, session]


def test_log_lines_never_carry_a_secret(settings: Settings) -> None:
    assert SECRET_KEY not in repr(settings) and WRITE_KEY not in repr(settings)  # tracebacks
    redact("my own secret key")
    try:
        raise ValueError("bad body {'writeKey': 'my own secret key'}")
    except ValueError:
        record = logging.LogRecord("kairos.test", logging.ERROR, __file__, 1, "request failed",
                                   None, sys.exc_info())  # fmt: skip
    record.headers = {"authorization": "Basic d2tfdGVzdDo=", "cookie": "kairos_session=1.abc"}
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "ValueError: bad body" in line and "[redacted]" in line
        for secret in ("my own secret key", "d2tfdGVzdDo=", "1.abc"):
            assert secret not in line, line


@pytest.mark.slow  # a whole `kairos up`, driven at debug level
def test_no_secret_in_the_banner_or_the_logs(kairos_process: Callable[..., Process]) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        engine = kairos_process("--log-level", "debug")
        # The [limits] of its config file apply (this machine's own requests have no per-IP one).
        (engine.data_dir / "kairos.toml").write_text("[limits]\nper_ip = 0.5\nburst = 4\n")
        engine.start(timeout=120)
        handed_out = _drive(engine, f"http://127.0.0.1:{hook.server_port}/hook")
        statuses = [
            httpx.get(engine.url + "/openapi.json", headers={"X-Forwarded-For": "203.0.113.9"},
                      timeout=30).status_code
            for _ in range(6)
        ]  # fmt: skip
        assert statuses[:2] == [200, 200] and 429 in statuses, statuses
        assert engine.stop() == 0
    finally:
        hook.shutdown()
        hook.server_close()
    log = (engine.data_dir / "engine.log").read_text()
    assert (
        "write key   from $KAIROS_WRITE_KEY" in log and "secret key  from $KAIROS_SECRET_KEY" in log
    )
    assert "identity    from $KAIROS_IDENTITY_SECRET" in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line["level"] == "debug" for line in lines)  # debug level was on
    basic_value = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    for secret in (WRITE_KEY, SECRET_KEY, IDENTITY_SECRET, basic_value, *handed_out):
        assert secret not in log, f"{secret!r} in engine.log"


def test_the_banner_shows_keys_only_on_the_start_that_made_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KAIROS_WRITE_KEY", "KAIROS_SECRET_KEY", "KAIROS_IDENTITY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    first = load_keys(tmp_path)
    assert first.created == {"write_key", "secret_key", "identity_secret"}
    assert first.identity_secret.startswith("idsec_") and len(first.identity_secret) > 40
    settings = Settings("redis://r", "chdb://c", first.write_key, first.secret_key,
                        identity_secret=first.identity_secret)  # fmt: skip
    _banner(settings, tmp_path, "chdb://c", first.created, True)
    made = capsys.readouterr().out
    assert first.write_key in made and first.secret_key in made and first.identity_secret in made
    assert f"(new, private: servers, dashboard; kept in {tmp_path / 'keys.json'})" in made
    again = load_keys(tmp_path)
    assert not again.created and replace(again, created=first.created) == first
    _banner(settings, tmp_path, "chdb://c", again.created, True)
    later = capsys.readouterr().out
    for key in (first.write_key, first.secret_key, first.identity_secret):
        assert key not in later
    assert f"secret key  in {tmp_path / 'keys.json'}" in later
    assert f"identity    in {tmp_path / 'keys.json'}" in later
    given = load_keys(tmp_path, secret_key="sk_from_the_command_line")
    _banner(replace(settings, secret_key=given.secret_key), tmp_path, "chdb://c", frozenset(), True)
    assert "secret key  from the command line" in capsys.readouterr().out
    # A data dir from before the identity secret gets one on its next start; only it is new.
    keys = json.loads((tmp_path / "keys.json").read_text())
    del keys["identity_secret"]
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    upgraded = load_keys(tmp_path)
    assert upgraded.created == {"identity_secret"} and upgraded.write_key == first.write_key
    assert upgraded.identity_secret not in (first.identity_secret, "")
    _banner(replace(settings, identity_secret=upgraded.identity_secret), tmp_path, "chdb://c",
            upgraded.created, True)  # fmt: skip
    shown = capsys.readouterr().out
    assert upgraded.identity_secret in shown and first.secret_key not in shown
    assert json.loads((tmp_path / "keys.json").read_text())["identity_secret"] == (
        upgraded.identity_secret
    )
