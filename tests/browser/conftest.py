"""Playwright driving Debian's Chromium against the live ASGI server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import _missing
from tests.diagnostics.worker import start_worker  # noqa: F401  (fixture)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = shutil.which("chromium")
    if executable is None:
        _missing("browser tests need Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the
    # tests make between browser steps are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def login(browser, asgi_server):
    """Open a fresh browser context logged in as `user` through the login form."""
    from tests.factories import PASSWORD

    contexts = []

    def _login(user, *, width: int = 1280, height: int = 900, bypass_csp: bool = False):
        context = browser.new_context(
            base_url=asgi_server.url,
            viewport={"width": width, "height": height},
            bypass_csp=bypass_csp,
        )
        contexts.append(context)
        page = context.new_page()
        page.goto("/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{asgi_server.url}/")
        return page

    yield _login
    for context in contexts:
        context.close()
