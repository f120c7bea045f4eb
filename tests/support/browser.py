"""What every browser test shares: Debian's Chromium driven by Playwright, headless, and where the
screenshots go. Each test module still calls `pytest.importorskip("playwright.sync_api")` itself, so a
machine without Playwright skips them with one clear reason."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.builders import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "browser-test-password"
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium "
                                                     "(apt-get install chromium); browser tests skipped"),
]


@contextmanager
def chromium(playwright_api: Any) -> Iterator[Any]:
    """A launched headless Chromium, closed afterwards."""
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact and print its path (`-s` shows it)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = SHOTS / name
    page.screenshot(path=str(target), full_page=True)
    print(f"screenshot: {target}")
    return target
