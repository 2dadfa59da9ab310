"""The header's language selector in a real browser: the choice applies at once, stays on the
next pages and after signing in again; an anonymous Dutch browser gets the Dutch log-in page."""

import pytest

from evpay.models import StaffPreferences
from tests.conftest import PASSWORD
from tests.dashboard import factories as f

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("compiled_catalogues"),
]


@pytest.fixture
def session():
    site = f.make_site("Depot Utrecht")
    f.make_tariff(site)
    connector = f.make_connector(f.make_terminal(site))
    return f.make_session(connector, cost_total_minor=123456, authorised_amount_minor=200000)


def test_a_staff_member_switches_to_dutch_in_the_header_and_stays_dutch(
    page, login, operator, session, screenshot
):
    login(page, operator)
    assert page.locator("html").get_attribute("lang") == "en"
    page.get_by_label("Language").select_option("nl")
    page.get_by_role("button", name="Switch").click()
    page.wait_for_selector("h1:text-is('Overzicht')")
    assert page.locator("html").get_attribute("lang") == "nl"
    assert StaffPreferences.objects.get(user=operator).language == "nl"

    page.get_by_role("navigation", name="Hoofdmenu").get_by_role("link", name="Laadsessies").click()
    page.wait_for_selector("h1:text-is('Laadsessies')")
    row = page.locator("#results tbody tr").first
    assert "€\u00a01.234,56" in row.inner_text()
    screenshot(page, "language-sessions-nl")
    page.goto(f"/sessions/{session.public_id}/")
    page.wait_for_selector("th:text-is('Blokkeertarief')")
    screenshot(page, "language-session-detail-nl")

    # Signed out and in again: the log-in page is Dutch (the cookie), and so are the pages.
    page.get_by_role("button", name="Uitloggen").click()
    page.wait_for_selector("h1:text-is('Inloggen')")
    page.get_by_label("Gebruikersnaam").fill(operator.get_username())
    page.get_by_label("Wachtwoord").fill(PASSWORD)
    page.get_by_role("button", name="Inloggen").click()
    page.wait_for_selector("h1:text-is('Overzicht')")

    # And back: the selector's label is Dutch now.
    page.get_by_label("Taal").select_option("en")
    page.get_by_role("button", name="Wisselen").click()
    page.wait_for_selector("h1:text-is('Overview')")
    assert StaffPreferences.objects.get(user=operator).language == "en"


def test_an_anonymous_dutch_browser_gets_the_dutch_log_in_page(browser, live_server, screenshot):
    context = browser.new_context(base_url=live_server.url, locale="nl-NL")
    try:
        page = context.new_page()
        page.goto("/login/")
        assert page.locator("h1").inner_text() == "Inloggen"
        assert page.locator("html").get_attribute("lang") == "nl"
        screenshot(page, "language-login-nl")
    finally:
        context.close()
