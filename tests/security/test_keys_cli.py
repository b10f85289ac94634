"""``kairos keys create|list|revoke`` against a running engine: the key printed once on
stdout, the listing never showing it, a revoked key refused."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import SECRET_KEY, Engine


def _kairos(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "keys", *args, "--url", engine.url,
                           "--secret-key", SECRET_KEY],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_create_list_and_revoke_a_key_from_the_command_line(engine: Engine) -> None:
    made = _kairos(engine, "create", "email-system", "--scope", "recommendations", "--scope",
                   "read", "--network", "127.0.0.0/8", "--expires", "2099-01-01")  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("kk_") and "not shown again" in made.stderr
    answer = engine.client.get(engine.url + "/v1/placements",
                               headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    listed = _kairos(engine, "list")
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(" email-system")]
    assert key[:7] + "…" in row and "read recommendations" in row and "127.0.0.0/8" in row
    assert "2099-01-01 00:00" in row and "never" in row  # expires; not used before the reload
    taken = _kairos(engine, "create", "email-system", "--scope", "read")
    assert (
        taken.returncode == 1 and "name_taken: $.name: a key named 'email-system'" in taken.stderr
    )
    gone = _kairos(engine, "revoke", "email-system")
    assert gone.returncode == 0 and "revoked 'email-system'" in gone.stdout
    answer = engine.client.get(engine.url + "/v1/placements",
                               headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert answer.status_code == 401
    missing = _kairos(engine, "revoke", "email-system")
    assert missing.returncode == 1 and "not_found: no key named 'email-system'" in missing.stderr


def test_a_bad_scope_is_refused_by_the_command_line_with_the_valid_ones() -> None:
    done = subprocess.run([sys.executable, "-m", "edge.cli", "keys", "create", "x", "--scope",
                           "root"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "invalid choice: 'root' (choose from 'track', 'decide'" in done.stderr
