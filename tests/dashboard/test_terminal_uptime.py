"""A terminal's page: the last 24 hours as a status strip, uptime per day and per month."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from terminals import uptime
from terminals.models import TerminalStatus, TerminalStatusChange
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db
S = TerminalStatus


def change(terminal, at, from_status, to_status):
    return TerminalStatusChange.objects.create(
        terminal=terminal, at=at, from_status=from_status, to_status=to_status
    )


def test_terminal_page_draws_the_last_24_hours_as_a_status_strip_with_text(client_for, viewer):
    terminal = f.make_terminal()
    now = timezone.now()
    change(terminal, now - timedelta(hours=30), S.UNKNOWN, S.READY)
    change(terminal, now - timedelta(hours=6), S.READY, S.OFFLINE)
    change(terminal, now - timedelta(hours=3), S.OFFLINE, S.BUSY)

    html = client_for(viewer).get(url("terminals:detail", terminal.public_id)).content.decode()

    assert '<svg id="status-strip"' in html
    assert '<title id="status-strip-title">Status over the last 24 hours</title>' in html
    assert "online 18 h 00 min, busy 3 h 00 min, offline 3 h 00 min" in html
    assert html.count('class="seg online"') == 1
    assert html.count('class="seg offline"') == 1
    assert html.count('class="seg busy"') == 1
    # The legend says what each colour means.
    assert '<span class="swatch offline" aria-hidden="true"></span>Offline' in html
    assert '<table id="uptime-table">' in html


def test_uptime_per_day_and_month_counts_online_and_busy_time_in_the_sites_zone():
    site = f.make_site(time_zone="Europe/Amsterdam")
    terminal = f.make_terminal(site)
    tz = ZoneInfo("Europe/Amsterdam")
    now = datetime(2026, 3, 10, 12, 0, tzinfo=tz)
    change(terminal, datetime(2026, 1, 20, 0, 0, tzinfo=tz), S.UNKNOWN, S.READY)
    # Offline from 18:00 on 8 March to 00:00 on 9 March: 6 h of that day.
    change(terminal, datetime(2026, 3, 8, 18, 0, tzinfo=tz), S.READY, S.OFFLINE)
    change(terminal, datetime(2026, 3, 9, 0, 0, tzinfo=tz), S.OFFLINE, S.BUSY)

    figures = uptime.terminal_uptime(terminal, now=now)

    days = {d["day"].isoformat(): d["percent"] for d in figures["days"]}
    assert days == {
        "2026-03-04": 100.0,
        "2026-03-05": 100.0,
        "2026-03-06": 100.0,
        "2026-03-07": 100.0,
        "2026-03-08": 75.0,
        "2026-03-09": 100.0,
        "2026-03-10": 100.0,  # so far today
    }
    months = {m["label"]: m["percent"] for m in figures["months"]}
    # January: unknown until the 20th 00:00, then ready: 12 of 31 days.
    assert months == {
        "January 2026": round(100 * 12 / 31, 1),
        "February 2026": 100.0,
        "March 2026": round(100 * (9 * 24 + 12 - 6) / (9 * 24 + 12), 1),
    }
    assert figures["days"][4]["text"] == "Sun 2026-03-08: up 75.0% of the time (offline 6 h 00 min)"


def test_without_any_history_the_current_status_holds_throughout():
    terminal = f.make_terminal(status=S.OFFLINE)
    figures = uptime.terminal_uptime(terminal)
    assert [s["key"] for s in figures["strip"]] == ["offline"]
    assert figures["months"][-1]["percent"] == 0.0


def test_the_terminal_page_costs_the_same_queries_for_a_long_history(client_for, viewer):
    terminal = f.make_terminal()
    client = client_for(viewer)
    page = url("terminals:detail", terminal.public_id)
    change(terminal, timezone.now() - timedelta(days=1), S.UNKNOWN, S.READY)
    with CaptureQueriesContext(connection) as few:
        client.get(page)
    f.flapping_status_history(terminal, 399, every=timedelta(minutes=20))
    with CaptureQueriesContext(connection) as many:
        html = client.get(page).content.decode()
    assert len(many) == len(few)
    assert html.count('class="seg offline"') >= 30


def test_the_history_table_shows_the_latest_changes_however_old(client_for, viewer):
    """The chart reads its months; the table's twenty come with them, also from before them."""
    terminal = f.make_terminal(status=S.OFFLINE)
    year_ago = timezone.now() - timedelta(days=365)
    for i in range(5):
        change(terminal, year_ago + timedelta(hours=i), S.READY, S.OFFLINE if i % 2 else S.BUSY)
    figures = uptime.terminal_uptime(terminal, history=20)
    assert [h.at for h in figures["history"]] == [
        year_ago + timedelta(hours=i) for i in range(4, -1, -1)
    ]
    # The window starts in the status of the last change before it.
    assert [s["key"] for s in figures["strip"]] == ["busy"]
    html = client_for(viewer).get(url("terminals:detail", terminal.public_id)).content.decode()
    table = html.split("<h2>Status history</h2>")[1].split("</table>")[0]
    assert table.count("<tr><td>") == 5

    now = timezone.now()
    for i in range(1, 31):
        change(terminal, now - timedelta(minutes=10 * i), S.READY, S.OFFLINE)
    figures = uptime.terminal_uptime(terminal, history=20)
    assert [h.at for h in figures["history"]] == [
        now - timedelta(minutes=10 * i) for i in range(1, 21)
    ]
    assert uptime.terminal_uptime(terminal)["history"] == []


def test_a_day_that_springs_forward_is_23_hours_long():
    terminal = f.make_terminal(f.make_site(time_zone="Europe/Amsterdam"))
    tz = ZoneInfo("Europe/Amsterdam")
    change(terminal, datetime(2026, 3, 1, tzinfo=tz), S.UNKNOWN, S.READY)
    # Up from midnight to noon on 29 March: 11 real hours (02:00 became 03:00) of 23.
    change(terminal, datetime(2026, 3, 29, 12, 0, tzinfo=tz), S.READY, S.OFFLINE)
    change(terminal, datetime(2026, 3, 30, 0, 0, tzinfo=tz), S.OFFLINE, S.READY)
    figures = uptime.terminal_uptime(terminal, now=datetime(2026, 3, 30, 12, 0, tzinfo=tz))
    days = {d["day"].isoformat(): d["percent"] for d in figures["days"]}
    assert days["2026-03-28"] == 100.0
    assert days["2026-03-29"] == round(100 * 11 / 23, 1)
