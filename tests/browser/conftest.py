"""Real-browser fixtures: Playwright driving Debian's Chromium (/usr/bin/chromium) against the live server,
with every request to another host refused; and CPO simulator processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Never `playwright install`: Playwright drives the distribution's Chromium (docs recipes, "Real browser tests").
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def browser_unavailable() -> str | None:
    """Why the browser tests can't run here, or None."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (`make test` installs Debian's package: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


class BrowserPage:
    """A Playwright page plus the requests it tried to make to other hosts (refused)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.external_requests: list[str] = []


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[BrowserPage]:
    """A headless Chromium page (1440 px wide, downloads accepted) that may only reach 127.0.0.1."""
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import Route, sync_playwright

    # Playwright's sync API keeps an asyncio loop marked as running in this thread, so Django would refuse the
    # test's own (synchronous) ORM calls between browser steps; the live server runs in another thread.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
        context.set_default_timeout(20_000)
        wrapped = BrowserPage(context.new_page())

        def local_only(route: Route) -> None:
            url = urlsplit(route.request.url)
            if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
                wrapped.external_requests.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", local_only)
        try:
            yield wrapped
        finally:
            context.close()
            browser.close()
            # While that loop runs, asgiref keeps this thread's database connections in per-context storage;
            # close them now, or they outlive the test and block dropping the test database.
            from django.db import connections

            connections.close_all()
