"""Browser tests: Debian's Chromium through Playwright, a live server and a real emulator."""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CARD_WAIT = 3


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while it
    lives, which would break later tests that use asyncio.run()."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("EVPAY_REQUIRE_SERVICES") == "1":
            pytest.fail(
                f"{CHROMIUM} is missing (EVPAY_REQUIRE_SERVICES=1): apt-get install -y chromium"
            )
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    # The ORM calls the tests make between page steps are plain synchronous code, but Django
    # sees Playwright's running loop and would refuse them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm questions
    yield page
    context.close()


@pytest.fixture(scope="session")
def emulator():
    from terminals.emulator.harness import EmulatorProcess

    with EmulatorProcess(count=1, channel1="terminal", card_wait=CARD_WAIT) as emu:
        yield emu


@pytest.fixture
def eager_tasks():
    """Run Celery tasks in-process, so the dashboard's actions really reach the emulator."""
    from evpay.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, False
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name):
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def login():
    from tests.conftest import PASSWORD

    def log_in(page, user):
        page.goto("/login/")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/")
        return page

    return log_in
