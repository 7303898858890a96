"""Playwright against Debian's Chromium, a real live server and the real Celery worker.

- ``browser``: one headless Chromium for the session (``/usr/bin/chromium``,
  no Playwright browser download); override the path with ``POTAFLOW_CHROMIUM``.
- ``page``: a fresh context per test with clipboard access, 10 s default timeout;
  a Content-Security-Policy violation on its console fails the test.
- ``shot(page, name)``: a full-page screenshot in ``test-artifacts/screenshots/``
  (git-ignored) for humans to look at.
- ``admin_login(page, live_server, email, password)``: logs in through the admin form.

Tests here are marked ``browser`` (and ``slow``: they start the worker).
"""

import os
from pathlib import Path

import pytest

from workflows.tests import handlers  # noqa: F401 - the test handlers (test.flaky...) in this process too

# Playwright's sync API runs an event loop in this thread; Django refuses ORM
# calls from a thread with a running loop unless told this is intended.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("POTAFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"
PASSWORD = "browser-pass-123!"


def pytest_collection_modifyitems(items):
    for item in items:
        if "potaflow/tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=live_server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    # Every page runs under a strict Content-Security-Policy (potaflow/security_headers.py):
    # Chromium reports each blocked script, style or handler on the console, and any is a failure.
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield page
    context.close()
    assert violations == [], "CSP violations in the browser console"


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # The admin's {% static %} must not need a collectstatic manifest under tests.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def shot():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def admin_login(page, live_server, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", email)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
