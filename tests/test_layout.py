"""ARCHITECTURE.md's dependency rule: imports point one way, and domain code never imports the
web framework or the edge.

    edge ─> journeys, decisions ─> profiles ─> collector ─> bandits (pure: imports nothing of ours)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"bandits", "collector", "profiles", "decisions", "journeys", "edge"}
# What each package may import of ours (besides itself); edge may import everything.
ALLOWED = {
    "bandits": set(),
    "collector": {"bandits"},
    "profiles": {"bandits", "collector"},
    "decisions": {"bandits", "collector", "profiles"},
    "journeys": {"bandits", "collector", "profiles"},
}
FORBIDDEN_EVERYWHERE_BUT_EDGE = {"starlette", "uvicorn"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_domain_packages_import_only_downwards(package: str) -> None:
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        imported = _imports(path)
        bad = (imported & OURS - {package} - ALLOWED[package]) | (
            imported & FORBIDDEN_EVERYWHERE_BUT_EDGE
        )
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"imports against the dependency rule: {wrong}"


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from starlette.responses import Response\nimport edge.api.app\n")
    assert _imports(bad) == {"starlette", "edge"}
