"""The overview's bars in a real browser: a bar is a link to that day's sessions."""

import pytest
from django.utils import timezone

from tests.dashboard import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_clicking_a_days_bar_opens_the_sessions_of_that_day(page, login, viewer, screenshot):
    site = f.make_site("Depot Utrecht")
    connector = f.make_connector(f.make_terminal(site))
    session = f.make_session(connector, requested_at=timezone.now())
    today = timezone.localdate().isoformat()

    login(page, viewer)
    page.goto("/?range=30d")
    screenshot(page, "overview-charts")
    bar = page.locator(f'#chart-captured-EUR a[data-day="{today}"]')
    assert "€" in bar.get_attribute("aria-label")
    bar.click()
    page.wait_for_url(f"**/sessions/?from={today}&to={today}")
    assert page.locator("#f-from").input_value() == today
    assert str(session.public_id)[:8] in page.content()
