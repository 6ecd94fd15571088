"""Headless Chromium for the page tests, driven by Playwright.

Playwright's own browser builds cannot be downloaded here: it launches the system Chromium
(Debian's ``chromium``, installed by ``.ci/setup``) through ``executable_path``. A missing
Chromium fails the tests; it never skips them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch(playwright):
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic"]
    )


def signed_in(browser, username: str, key: str, **options):
    """A browser context that answers the server's Basic prompt with ``username`` and the key,
    as a person does once per session."""
    return browser.new_context(http_credentials={"username": username, "password": key}, **options)


def screenshot(page, tmp_path: Path, name: str) -> None:
    """The whole page as ``tmp_path / name``; with ``HOKUSAI_DOCS_IMAGES=docs/images`` a copy
    there too (how the docs' screenshots are kept current: run the page tests with it, look
    at them, commit the ones that changed)."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    docs = os.environ.get("HOKUSAI_DOCS_IMAGES")
    if docs:
        shutil.copyfile(path, Path(docs) / name)
