"""README's ten-minute tour, then every command of docs/, run as written against a real
``kairos up --demo``.

The tour is every fenced ``sh`` block between ``<!-- tour -->`` and ``<!-- /tour -->`` in
README.md. Blocks run in order, each in its own ``bash -euo pipefail`` from the repository root,
with the environment the blocks before it exported (as in one terminal: the first block's
``export $(.venv/bin/kairos keys --env)`` reaches the rest). Shell variables that are not
exported do not carry over, so a block that passes here also passes in a terminal.

Then every ``sh`` block of the docs pages, in the order of mkdocs.yml's nav, runs the same way on
the same engine, except a block right after a ``<!-- no-run: why -->`` line (Docker, benchmarks
of minutes). Those blocks call the API with curl, which exits 0 on an error answer: none of them
may print an error body (``{"code": …}``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOUR = re.compile(r"<!-- tour -->(.*?)<!-- /tour -->", re.S)
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)
DOC_BLOCK = re.compile(r"^(<!-- no-run: [^>]+ -->\n)?```sh\n(.*?)^```$", re.S | re.M)
ERROR_BODY = re.compile(r'\{"code": ?"')
BLOCK_SECONDS = 120  # the longest block (thirty visitors) takes a few seconds on a quiet machine


def tour_blocks(text: str) -> list[str]:
    """The tour's shell blocks, in order."""
    found = TOUR.findall(text)
    assert len(found) == 1, "README.md needs exactly one <!-- tour --> … <!-- /tour --> section"
    return SH_BLOCK.findall(found[0])


def docs_blocks() -> list[tuple[str, str]]:
    """(page, block) of every docs block to run, in the nav's order."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = list(_pages(nav))
    assert sorted(pages) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    return [(page, block) for page in pages
            for skip, block in DOC_BLOCK.findall((ROOT / "docs" / page).read_text())
            if not skip]  # fmt: skip


def _pages(nav: Any) -> Iterator[str]:
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            yield from _pages(value) if isinstance(value, list) else [value]


@dataclass
class Ran:
    block: str
    returncode: int
    stdout: str
    stderr: str


def run_blocks(blocks: list[str], env: dict[str, str], cwd: Path, state: Path) -> list[Ran]:
    """Run ``blocks`` in order until one fails; each starts with what the ones before exported."""
    done = []
    for block in blocks:
        # The environment is dumped only when the block got to its end (set -e stops it before).
        script = f'{block}\nenv -0 > "$KAIROS_TOUR_STATE"\n'
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd, env={**env, "KAIROS_TOUR_STATE": str(state)},
            capture_output=True, text=True, timeout=BLOCK_SECONDS,
        )  # fmt: skip
        done.append(Ran(block, proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            break
        env = _exported(state)
    return done


def _exported(state: Path) -> dict[str, str]:
    pairs = (item.partition("=") for item in state.read_text().split("\0") if item)
    return {name: value for name, _, value in pairs if name != "KAIROS_TOUR_STATE"}


def _failure(where: str, ran: Ran, log: Path) -> str:
    return (f"{where} exited {ran.returncode}:\n{ran.block}\n--- stdout\n{ran.stdout[-3000:]}\n"
            f"--- stderr\n{ran.stderr[-3000:]}\n--- engine log\n"
            f"{log.read_text()[-3000:] if log.exists() else ''}")  # fmt: skip


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any KAIROS_ setting of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    return {**env, **extra}


def test_the_tour_is_there_and_written_for_a_newcomer() -> None:
    blocks = tour_blocks(README.read_text())
    assert len(blocks) >= 8
    assert blocks[0].startswith("export $(.venv/bin/kairos keys --env)\n")
    text = "\n".join(blocks)
    for needed in ("/v1/track", "/v1/identify", "/v1/profiles/", "/v1/decide",
                   "kairos report", "kairos sql", "-X PUT \"$KAIROS_URL/v1/placements/"):  # fmt: skip
        assert needed in text, needed
    assert "home_hero" not in text  # the demo's own placement: the tour makes its own
    assert not re.search(r"\b(wk|sk)_(\.\.\.|…)", text)  # no placeholder keys
    # Every kairos command is the venv's, as the set-up commands install it.
    assert not re.search(r"(?<!\.venv/bin/)\bkairos (keys|report|sql|up|simulate)\b", text)
    assert "127.0.0.1" not in text and "localhost" not in text  # "$KAIROS_URL" instead


def test_the_docs_commands_are_written_for_a_newcomer() -> None:
    blocks = docs_blocks()
    assert len(blocks) >= 15
    for page, block in blocks:
        assert not re.search(r"\b(wk|sk)_(\.\.\.|…)", block), page
        assert not re.search(
            r"(?<![/\w])kairos (keys|report|sql|up|simulate|worker|ltv|users)\b", block
        ), page
        assert "127.0.0.1" not in block and "localhost" not in block, page


def test_a_failing_block_stops_the_run_and_says_which(tmp_path: Path) -> None:
    blocks = ["export TOUR_A=1\nlocal_only=2", 'test "$TOUR_A" = 1\ntest -z "${local_only:-}"',
              "false\necho never", "echo not reached"]  # fmt: skip
    ran = run_blocks(blocks, _clean_env(), tmp_path, tmp_path / "state")
    assert [r.returncode for r in ran] == [0, 0, 1]  # exports carried, the rest did not
    assert "never" not in ran[2].stdout
    pipe = run_blocks(["false | true"], _clean_env(), tmp_path, tmp_path / "state")
    assert pipe[0].returncode == 1  # pipefail
    unset = run_blocks(['echo "$NOT_SET_ANYWHERE"'], _clean_env(), tmp_path, tmp_path / "state")
    assert unset[0].returncode != 0  # nounset


@pytest.mark.slow
def test_the_readme_tour_and_the_docs_commands_run_verbatim(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    assert (ROOT / ".venv" / "bin").resolve() == venv_bin.resolve(), (
        f"the tour runs .venv/bin/kairos from {ROOT}: run the tests with that venv's python "
        f"(this is {sys.executable})"
    )
    port, data_dir, log = free_port(), tmp_path / "data", tmp_path / "engine.log"
    env = _clean_env(KAIROS_PORT=str(port), KAIROS_DATA_DIR=str(data_dir))
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        engine = subprocess.Popen([str(venv_bin / "kairos"), "up", "--demo"], cwd=tmp_path,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_healthy(engine, url, log)
        state = tmp_path / "state"
        ran = run_blocks(tour_blocks(README.read_text()), env, ROOT, state)
        assert ran[-1].returncode == 0, _failure(f"tour block {len(ran)}", ran[-1], log)
        out = {i + 1: r.stdout for i, r in enumerate(ran)}
        assert '"status":"ok"' in out[1]
        assert out[2].split() == ['{"success":true}', '{"success":true}']
        assert '"first_name":"Ada"' in out[3] and '"user_id":["ada"]' in out[3]
        assert '"key":"tour_banner"' in out[4]
        assert re.search(
            r'"tour_banner":\{"decisionId":"d_[\w-]+","variant":"(plain|bold)"', out[5]
        )
        assert "tour_banner · policy thompson · metric reward · control plain" in out[7]
        assert re.search(r"^ bold +\| +\d+ \|", out[7], re.M)
        assert " variant | decisions" in out[8]
        assert f"url         {url}" in out[9]
        assert len(ran) == 9
        # Then the docs' commands, in the same terminal: the tour's exports hold.
        docs = docs_blocks()
        done = run_blocks([block for _, block in docs], _exported(state), ROOT, state)
        for (page, _), ran_one in zip(docs, done):
            where = f"docs/{page}, its block"
            assert ran_one.returncode == 0, _failure(where, ran_one, log)
            assert not ERROR_BODY.search(ran_one.stdout), _failure(where, ran_one, log)
        assert len(done) == len(docs)
    finally:
        engine.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
    assert engine.returncode == 0, log.read_text()[-3000:]


def _wait_healthy(engine: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert engine.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("kairos up --demo did not become healthy:\n" + log.read_text()[-3000:])
