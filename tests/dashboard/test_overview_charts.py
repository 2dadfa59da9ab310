"""The overview's payment figures: SVG bars per day with a text alternative and links."""

import re
from datetime import datetime, time, timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions.models import Operation, Outcome
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def at(day, hour=12, minute=0):
    """An aware time on a local day of the operator's zone (settings.TIME_ZONE)."""
    return timezone.make_aware(datetime.combine(day, time(hour, minute)))


@pytest.fixture
def charger():
    site = f.make_site("Depot Utrecht")
    terminal = f.make_terminal(site)
    return f.make_connector(terminal)


def captured(connector, when, amount=450, **fields):
    return f.make_session(
        connector,
        requested_at=when,
        captured_amount_minor=amount,
        cost_total_minor=amount,
        **fields,
    )


def authorised(connector, when, outcome):
    session = f.make_session(connector, requested_at=when, captured_amount_minor=0)
    return f.make_tx(session, Operation.AUTHORISE, outcome=outcome, created_at=when)


def test_overview_draws_captured_amount_and_count_per_day_linking_to_that_days_sessions(
    client_for, viewer, charger
):
    today = timezone.localdate()
    yesterday = today - timedelta(days=1)
    a = captured(charger, at(yesterday, 9))
    b = captured(charger, at(yesterday, 15), amount=1000)
    other = captured(charger, at(today - timedelta(days=3)))

    html = client_for(viewer).get(url("overview")).content.decode()

    assert '<svg id="chart-captured-EUR"' in html
    assert '<title id="chart-captured-EUR-title">Captured EUR per day</title>' in html
    day = yesterday.isoformat()
    link = f"/sessions/?from={day}&amp;to={day}"
    assert (
        f'<a href="{link}" aria-label="{yesterday:%a} {day}: € 14.50 captured in 2 sessions"'
        in (html.replace("\u00a0", " "))
    )
    # The same figures as text, in a table under the charts.
    assert '<table id="payment-figures-table">' in html
    # Seven days by default, one bar each.
    assert html.count('class="bar captured"') == 7

    listed = client_for(viewer).get(unescape(link)).content.decode()
    assert str(a.public_id)[:8] in listed and str(b.public_id)[:8] in listed
    assert str(other.public_id)[:8] not in listed


def test_a_day_is_a_day_of_the_operators_zone_not_utc(client_for, viewer, charger, settings):
    assert settings.TIME_ZONE == "Europe/Amsterdam"
    today = timezone.localdate()
    two_days_ago = today - timedelta(days=2)
    captured(charger, at(two_days_ago, 23, 30))  # 22:30 UTC in winter, 21:30 in summer

    html = client_for(viewer).get(url("overview")).content.decode().replace("\u00a0", " ")

    assert f'{two_days_ago.isoformat()}: € 4.50 captured in 1 session"' in html
    day_after = (two_days_ago + timedelta(days=1)).isoformat()
    assert f'{day_after}: € 0.00 captured in 0 sessions"' in html


def test_overview_shows_approval_and_decline_rates_per_day(client_for, viewer, charger):
    day = timezone.localdate() - timedelta(days=1)
    for outcome in [Outcome.SUCCESS] * 3 + [Outcome.DECLINED, Outcome.FAILED]:
        authorised(charger, at(day, 10), outcome)
    authorised(charger, at(day, 11), Outcome.PENDING)  # not ended: left out

    html = client_for(viewer).get(url("overview")).content.decode()

    assert '<svg id="chart-approval"' in html
    assert (
        f"{day.isoformat()}: 5 authorisations: 3 approved (60%), 1 declined (20%), "
        "1 failed or aborted (20%)" in html
    )
    assert 'class="bar approved"' in html and 'class="bar declined"' in html
    assert "60% approved, 20% declined, 20% failed or aborted" in html
    # A legend names the colours.
    assert '<span class="swatch declined" aria-hidden="true"></span>Declined' in html


@pytest.mark.parametrize(("preset", "days"), [("7d", 7), ("30d", 30), ("nonsense", 7)])
def test_date_presets_choose_the_days_drawn(client_for, viewer, charger, preset, days):
    captured(charger, at(timezone.localdate(), 1))
    html = client_for(viewer).get(url("overview"), {"range": preset}).content.decode()
    # One bar a day in each chart: the captured EUR and the authorisation outcomes.
    assert html.count('class="bar captured"') == days
    assert html.count('class="bar-link"') == 2 * days
    assert len(re.findall(r"<tr><th scope=\"row\">", html)) == days


def test_this_month_and_last_month_presets(client_for, viewer, charger):
    today = timezone.localdate()
    first = today.replace(day=1)
    last_month_end = first - timedelta(days=1)
    captured(charger, at(last_month_end, 12))
    client = client_for(viewer)

    html = client.get(url("overview"), {"range": "last_month"}).content.decode()
    assert html.count('class="bar captured"') == last_month_end.day
    assert 'href="?range=last_month" aria-current="true"' in html

    html = client.get(url("overview"), {"range": "month"}).content.decode()
    assert f"from={first.isoformat()}" in html
    assert f"from={last_month_end.isoformat()}" not in html


def test_the_figures_cost_the_same_queries_for_one_session_or_a_month_of_them(
    client_for, viewer, charger
):
    client = client_for(viewer)
    captured(charger, at(timezone.localdate(), 1))
    with CaptureQueriesContext(connection) as few:
        client.get(url("overview"), {"range": "30d"})
    for n in range(1, 30):
        when = at(timezone.localdate() - timedelta(days=n), 10)
        captured(charger, when)
        authorised(charger, when, Outcome.DECLINED if n % 3 else Outcome.SUCCESS)
    with CaptureQueriesContext(connection) as many:
        html = client.get(url("overview"), {"range": "30d"}).content.decode()
    assert len(many) == len(few)
    assert "30 sessions" in html


def test_the_live_poll_does_not_recompute_the_figures(client_for, viewer, charger):
    response = client_for(viewer).get(url("overview"), headers={"HX-Request": "true"})
    assert b'id="overview-live"' in response.content
    assert b"payment-figures" not in response.content
