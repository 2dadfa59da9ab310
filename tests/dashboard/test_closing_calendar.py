"""The closings page's month calendar: each terminal's days by closing state."""

from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def closing(terminal, day, state, minutes=0):
    end = timezone.now() - timedelta(days=40) + timedelta(minutes=minutes)
    return f.make_closing(terminal, state=state, business_date=day, period_end=end)


def test_closings_page_shows_a_month_grid_per_terminal_with_colour_symbol_and_word(
    client_for, viewer
):
    terminal = f.make_terminal(name="IM30 Gate")
    ok = closing(terminal, date(2026, 3, 2), "matched")
    bad = closing(terminal, date(2026, 3, 3), "mismatch")
    closing(terminal, date(2026, 3, 4), "unverified")
    closing(terminal, date(2026, 3, 5), "failed")
    closing(terminal, date(2026, 2, 27), "failed")  # another month

    html = client_for(viewer).get(url("terminals:closings"), {"month": "2026-03"}).content.decode()

    assert '<h2 id="closing-calendar-title">Closings in March 2026</h2>' in html
    assert "<strong>IM30 Gate</strong>" in html
    assert (
        f'<td class="cal-day matched"><a href="/closings/{ok.public_id}/" '
        'aria-label="2026-03-02: Matched"' in html
    )
    assert f'href="/closings/{bad.public_id}/" aria-label="2026-03-03: Mismatch"' in html
    assert 'aria-label="2026-03-04: Unverified (no totals)"' in html
    assert 'aria-label="2026-03-05: Failed"' in html
    assert "1 matched, 1 mismatch, 1 unverified (no totals), 1 failed" in html
    assert "2026-03-06: no closing" in html
    assert "2026-02-27: " not in html
    # The legend: symbol and word for every colour.
    assert '<span class="cal-mark mismatch" aria-hidden="true">≠</span>Mismatch' in html
    # Month navigation keeps the filters.
    assert 'href="?month=2026-02" rel="prev"' in html


def test_a_rerun_day_shows_its_latest_closing(client_for, viewer):
    terminal = f.make_terminal()
    closing(terminal, date(2026, 3, 2), "mismatch", minutes=0)
    rerun = closing(terminal, date(2026, 3, 2), "matched", minutes=30)
    html = client_for(viewer).get(url("terminals:closings"), {"month": "2026-03"}).content.decode()
    assert f'href="/closings/{rerun.public_id}/" aria-label="2026-03-02: Matched"' in html
    assert "2026-03-02: Mismatch" not in html


def test_the_calendar_follows_the_terminal_filter(client_for, viewer):
    one, other = f.make_terminal(name="IM30 One"), f.make_terminal(name="IM30 Two")
    closing(one, date(2026, 3, 2), "matched")
    closing(other, date(2026, 3, 2), "failed")
    html = (
        client_for(viewer)
        .get(url("terminals:closings"), {"month": "2026-03", "terminal": str(one.public_id)})
        .content.decode()
    )
    assert "<strong>IM30 One</strong>" in html and "<strong>IM30 Two</strong>" not in html
    assert f"terminal={one.public_id}&amp;month=2026-02" in html


def test_the_calendar_costs_one_query_however_many_terminals_closed(client_for, viewer):
    client = client_for(viewer)
    site = f.make_site()
    terminals = f.bulk_terminals(site, 30)
    closing(terminals[0], date(2026, 3, 1), "matched")
    with CaptureQueriesContext(connection) as few:
        client.get(url("terminals:closings"), {"month": "2026-03"})
    for i, terminal in enumerate(terminals):
        for day in range(1, 29, 3):
            closing(terminal, date(2026, 3, day), "matched" if (i + day) % 4 else "mismatch")
    with CaptureQueriesContext(connection) as many:
        html = client.get(url("terminals:closings"), {"month": "2026-03"}).content.decode()
    assert len(many) == len(few)
    assert html.count('<table class="month-grid">') == 24
    assert "6 more terminals closed this month" in html
