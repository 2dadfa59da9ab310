"""In Chromium, a live poll of an unchanged fragment sends If-None-Match and gets a 304 that
htmx does not swap; a change comes back as a 200 and shows (issue 19, P4)."""

import time

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from terminals.models import Terminal, TerminalStatus
from tests.dashboard import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_terminal_status_poll_is_a_304_while_unchanged_and_shows_a_change(page, login, viewer):
    terminal = f.make_terminal(f.make_site("Depot Utrecht"))
    polls = []
    page.on(
        "response",
        lambda r: (
            polls.append((r.status, r.request.headers.get("if-none-match")))
            if "part=status" in r.url
            else None
        ),
    )
    login(page, viewer)
    page.goto(f"/terminals/{terminal.public_id}/")
    page.evaluate("window.__notReloaded = true")
    badge = page.locator("#terminal-status-badge")
    expect(badge).to_have_text(terminal.get_status_display())
    deadline = time.monotonic() + 20
    while len(polls) < 3 and time.monotonic() < deadline:  # every 5 s
        page.wait_for_timeout(500)
    assert polls[0] == (200, None), polls
    assert all(status == 304 and tag for status, tag in polls[1:3]), polls
    expect(badge).to_have_text(terminal.get_status_display())  # not swapped away by a 304

    Terminal.objects.filter(pk=terminal.pk).update(
        status=TerminalStatus.OFFLINE, status_changed_at=timezone.now()
    )
    expect(badge).to_have_text("Offline", timeout=12_000)
    assert any(status == 200 for status, _tag in polls[3:]), polls
    assert page.evaluate("window.__notReloaded") is True
