"""Debian programs the suite drives (chromium, wrk), installed on first use where we may: a fresh
CI machine, as root, with apt-get. Elsewhere a missing one fails its test with the command."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

__all__ = ["program"]


def program(name: str, needed_by: str) -> str:
    """The path of Debian's ``name`` (package and program share the name), installing it if we may."""
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", name], check=True, env=env,
                       timeout=900, stdout=subprocess.DEVNULL)  # fmt: skip
        found = shutil.which(name)
    if found is None:
        pytest.fail(f"{needed_by} need Debian's {name}: apt-get install -y {name}")
    return found
