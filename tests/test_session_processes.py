"""The session-end check (tests/conftest.py) sees what the tests start, however deep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import started_by_the_tests


def test_a_grandchild_left_running_is_seen_until_it_is_gone(tmp_path: Path) -> None:
    # A child that starts a grandchild in its own session and exits at once: the grandchild is
    # an orphan, re-parented away from pytest, as a worker of a killed `kairos up` would be.
    pid_file = tmp_path / "pid"
    subprocess.run([sys.executable, "-c", "import pathlib, subprocess, sys; pathlib.Path(sys.argv[1])"
                    ".write_text(str(subprocess.Popen(['sleep', '30'], start_new_session=True,"
                    " stdout=subprocess.DEVNULL).pid))", str(pid_file)], check=True)  # fmt: skip
    orphan = int(pid_file.read_text())
    try:
        assert orphan in {pid for pid, _ in started_by_the_tests()}
    finally:
        subprocess.run(["kill", "-9", str(orphan)], check=True)
    subprocess.run(["sh", "-c", f"while kill -0 {orphan} 2>/dev/null; do sleep 0.05; done"],
                   timeout=10)  # fmt: skip
    assert orphan not in {pid for pid, _ in started_by_the_tests()}
