"""A page in a real browser for the tests: headless Chromium from Debian's package (the
Makefile installs it), driven by Playwright's Python API through ``executable_path``
(Playwright's own browser download is not needed). Errors the page raises or logs are
collected."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def chromium_path() -> str:
    """Debian's Chromium, or a skip saying how to get it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no Chromium: `make test` installs Debian's chromium")
    return found


@dataclass
class Opened:
    """A page open in the browser; ``errors``: its uncaught exceptions and console errors,
    ``requests``: every URL it asked for, as they come (from the start of the load)."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def record(self, kind: str, text: str) -> None:
        if kind == "error":
            self.errors.append(text)


@contextmanager
def open_page(path: Path, width: int = 1200, height: int = 900) -> Iterator[Opened]:
    """The file ``path`` opened in headless Chromium (:class:`Opened`)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            opened = Opened(browser.new_page(viewport={"width": width, "height": height}))
            page = opened.page
            page.on("pageerror", lambda error: opened.record("error", f"page error: {error}"))
            page.on("console", lambda message: opened.record(message.type, message.text))
            page.on("request", lambda request: opened.requests.append(request.url))
            page.goto(Path(path).resolve().as_uri())
            yield opened
        finally:
            browser.close()
