"""``kairos users`` against a running engine: add, list, role, reset and remove go through the
API with the secret key; a password comes from stdin or a prompt, never from argv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from typing import Any

import pytest

from edge.access import lockout, users
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import signed_in

PASSWORD = "correct horse battery"


@dataclass
class FakeEngine:
    url: str


def _kairos(
    engine: Engine | FakeEngine, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "users", *args, "--url", engine.url,
         "--secret-key", SECRET_KEY],
        input=stdin, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_users_are_managed_from_the_command_line(engine: Engine) -> None:
    added = _kairos(engine, "add", "Ada@Example.com", "--role", "viewer", "--password-stdin",
                    stdin=PASSWORD + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout == "added ada@example.com (viewer): they sign in at /dashboard\n"
    with signed_in(engine, "ada@example.com", PASSWORD) as client:
        table = _kairos(engine, "list")
        assert table.stdout.splitlines()[0].split() == ["email", "role", "sessions", "password",
                                                        "changed"]  # fmt: skip
        assert table.stdout.splitlines()[1].split()[:3] == ["ada@example.com", "viewer", "1"]
        found = json.loads(_kairos(engine, "list", "--format", "json").stdout)
        assert [(u["email"], u["role"]) for u in found] == [("ada@example.com", "viewer")]
        role = _kairos(engine, "role", "ada@example.com", "editor")
        assert role.stdout == "ada@example.com is editor from their next page\n"
        assert 'class="role">editor' in client.get("/dashboard").text
        reset = _kairos(engine, "reset", "ada@example.com", "--password-stdin",
                        stdin="another long password\n")  # fmt: skip
        assert reset.stdout == "new password for ada@example.com; 1 session(s) ended\n"
        assert client.get("/dashboard").status_code == 303  # signed out
    with signed_in(engine, "ada@example.com", "another long password"):
        removed = _kairos(engine, "remove", "ada@example.com")
        assert removed.stdout == "removed ada@example.com; 1 session(s) ended\n"
    assert _kairos(engine, "list").stdout == "no users yet: kairos users add EMAIL --role admin\n"


@pytest.mark.parametrize(
    ("args", "stdin", "said"),
    [
        pytest.param(["add", "bob@example.com", "--role", "editor", "--password-stdin"],
                     "short\n", "invalid_user: $.password: at least 12 characters",
                     id="short-password"),
        pytest.param(["add", "bob@example.com", "--role", "editor", "--password-stdin"], "",
                     "no password on stdin", id="empty-stdin"),
        pytest.param(["remove", "nobody@example.com"], "",
                     "not_found: no user 'nobody@example.com'", id="unknown-user"),
        pytest.param(["reset", "bob", "--password-stdin"], PASSWORD,
                     "invalid_email: $.email: not an email address: 'bob'", id="not-an-email"),
    ],
)  # fmt: skip
def test_what_goes_wrong_is_said_in_one_line(
    engine: Engine, args: list[str], stdin: str, said: str
) -> None:
    done = _kairos(engine, *args, stdin=stdin)
    assert done.returncode == 1
    assert done.stderr == f"kairos users {args[0]}: {said}\n"


def test_a_password_is_never_an_argument_and_the_help_says_the_rules(engine: Engine) -> None:
    given = _kairos(engine, "add", "bob@example.com", "--role", "admin", "--password", PASSWORD)
    assert given.returncode == 2 and "unrecognized arguments: --password" in given.stderr
    assert _kairos(engine, "list").stdout.startswith("no users yet")
    shown = _kairos(engine, "--help").stdout
    assert f"at least {users.MIN_PASSWORD} characters" in shown
    assert f"Five wrong passwords lock an account for {lockout.LOCK // 60} minutes" in shown
    assert lockout.FAILURES == 5


def test_the_cli_names_itself_to_the_engine() -> None:
    """Its User-Agent is how the audit log tells the CLI from a browser: seen by a plain HTTP
    server standing in for the engine."""
    seen: list[dict[str, str]] = []

    class Engine(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            body = b'{"users": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = _kairos(FakeEngine(f"http://127.0.0.1:{server.server_port}"), "list")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert seen[0]["User-Agent"] == f"kairos-cli/{version('kairos')}"
    assert seen[0]["Authorization"] == f"Bearer {SECRET_KEY}"
