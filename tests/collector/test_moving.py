"""Moving from the embedded engine to a server (docs/event-store.md): the docs' export block runs
verbatim on one embedded data dir, and its two load statements on another (the embedded engine
in place of the server, which cannot run here); every row arrives, and the person-ordered copy
fills itself from the events.

Each engine runs in a process of its own: one chdb data dir per process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "event-store.md"
BLOCK = re.compile(r"<!-- no-run: [^>]*test_moving\.py[^>]* -->\n```sh\n(.*?)^```$", re.S | re.M)

# A store as kairos up leaves it: migrated, with events (through the intake, as the sink writes
# them) and decisions.
_SOURCE = """
import sys
from collector import connect, migrate
client = connect("chdb://" + sys.argv[1])
migrate(client)
lines = "".join(
    '{"type":"track","messageId":"m%d","event":"Order Completed","anonymousId":"a%d",'
    '"profileId":"p%d","receivedAt":"2026-11-%02d 10:00:00.000","properties":{"revenue":%d}}\\n'
    % (n, n % 7, n % 7, 1 + n % 28, n) for n in range(500))
client.raw_insert("events_intake", None, lines, fmt="JSONEachRow",
                  settings={"input_format_json_read_objects_as_strings": 1})
client.command("INSERT INTO decisions (decisionId, timestamp, placement, variant, profileId) "
               "SELECT concat('d', toString(number)), now64(3), 'home_hero', 'a', 'p1' "
               "FROM numbers(40)")
"""

# The target: migrated first (kairos up against the server), then the docs' statements.
_TARGET = """
import json, sys
from collector import connect, migrate
client = connect("chdb://" + sys.argv[1])
migrate(client)
for statement in json.loads(sys.argv[2]):
    client.command(statement)
"""

_DIGEST = """
import json, sys
from collector import connect
client = connect("chdb://" + sys.argv[1])
print(json.dumps({table: client.query(
    f"SELECT count(), groupBitXor(cityHash64(*)) FROM {table}").result_rows[0]
    for table in ("events", "decisions", "events_by_person")}))
"""


def _run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_docs_recipe_moves_every_row(tmp_path: Path) -> None:
    export, load = BLOCK.findall(DOC.read_text())
    statements = re.findall(r'--query "([^"]+)"', load)
    assert len(statements) == 2 and all("FROM INFILE" in s for s in statements)
    (tmp_path / "kairos-data").mkdir()
    _run(_SOURCE, str(tmp_path / "kairos-data" / "clickhouse"), cwd=tmp_path)
    before = json.loads(_run(_DIGEST, str(tmp_path / "kairos-data" / "clickhouse"), cwd=tmp_path))

    exported = subprocess.run(["bash", "-c", export.replace(".venv/bin/python", sys.executable)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=_env())  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "events.native").stat().st_size > 0

    _run(_TARGET, str(tmp_path / "server"), json.dumps(statements), cwd=tmp_path)
    after = json.loads(_run(_DIGEST, str(tmp_path / "server"), cwd=tmp_path))
    assert before["events"][0] == 500 and before["decisions"][0] == 40
    assert after == before
