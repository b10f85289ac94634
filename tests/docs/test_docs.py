"""The docs hold up: the set-up commands are the ones CI runs, the reference builds strictly, and
every repository path the docs name exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/kairos up --demo"
TESTS = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
CHECKS = (".venv/bin/ruff", ".venv/bin/mypy", ".venv/bin/mkdocs")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PATH_LIKE = re.compile(r"[\w.-]+(/[\w.-]+)*/?")


def _documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_setup_commands_are_the_ones_ci_runs() -> None:
    blocks = re.findall(r"^```sh\n(.*?)\n```$", (ROOT / "README.md").read_text(), re.S | re.M)
    assert blocks[:2] == [START, TESTS]  # the front page's two commands, unchanged
    steps = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.startswith(".venv/") or line.startswith("python3 ")]  # fmt: skip
    docs = [s for s in steps if "mkdocs build --strict" in s]
    assert len(docs) == 1, "CI builds the docs once, strictly"
    # Between the install and the tests CI only checks (lint, types, the docs): it installs or
    # runs nothing a new user's command would not.
    checks = [s for s in steps if s.split()[0] in CHECKS]
    assert " && ".join(s for s in steps if s not in checks) == TESTS


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mkdocs")), "build", "--strict",
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "decisions" / "index.html").exists()


def named_paths(text: str, top: set[str]) -> list[str]:
    """Code spans that name a repository path: under a top-level entry, with a / or a suffix."""
    return [span for span in CODE_SPAN.findall(text)
            if PATH_LIKE.fullmatch(span) and span.split("/")[0] in top
            and ("/" in span or "." in span)]  # fmt: skip


def test_every_repository_path_the_docs_name_exists() -> None:
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]  # not .gitignored
    tracked = subprocess.run(listed, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    top = {name.split("/")[0] for name in tracked.split()}
    missing = {doc.name: gone for doc in _documents()
               if (gone := [p for p in named_paths(doc.read_text(), top)
                            if not (ROOT / p).exists()])}  # fmt: skip
    assert not missing, f"paths named in the docs that the repository does not have: {missing}"


def test_the_path_check_sees_a_missing_path() -> None:
    text = "see `edge/placements.py`, `decisions/placements.py`, `edge`, `x y` and `README.md`"
    named = named_paths(text, {"edge", "decisions", "README.md"})
    assert named == ["edge/placements.py", "decisions/placements.py", "README.md"]
    assert [p for p in named if not (ROOT / p).exists()] == ["edge/placements.py"]
