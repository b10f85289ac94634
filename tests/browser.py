"""Real headless Chromium for the browser tests: Debian's package, driven by Playwright (its own
browser downloads are not reachable here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from tests.debian import program

__all__ = ["ARTIFACTS", "FLAGS", "chromium", "launched", "shot", "watched"]

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def chromium() -> str:
    """Debian's chromium, installed on first use where we may (a fresh CI machine, as root)."""
    return program("chromium", "the browser tests")


def launched() -> Iterator[Browser]:
    """A browser for the length of a test module (the ``browser`` fixture)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=FLAGS)
        yield browser
        browser.close()


def watched(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of ``page``, as they happen."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def shot(page: Page, folder: str, name: str) -> None:
    (ARTIFACTS / folder).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / folder / f"{name}.png"), full_page=True)
